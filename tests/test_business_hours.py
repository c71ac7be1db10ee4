"""Business hours (serve.business_hours, serve.time_zone, serve.holidays): the opening-time arithmetic on a frozen
clock (a Friday evening, a holiday, a weekend, both daylight-saving changes), and what a hand-off outside them does:
it says when the team is back, takes an email address that no export ever holds, and its conversation leads the
agents' queue when the day starts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from helpers import write

from chatbot import ConfigError
from chatbot.business_hours import Schedule, away_text, is_open, next_opening, parse_hours, when

LONDON = ZoneInfo("Europe/London")
WEEKDAYS = "Mon-Fri 09:00-17:30"
UTC = timezone.utc


def london(*args) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def test_a_friday_evening_waits_for_monday_morning_across_the_spring_clock_change():
    friday = london(2025, 3, 28, 18, 0)  # GMT; the clocks go forward on Sunday 30 March
    opening = next_opening(friday, WEEKDAYS, "Europe/London")
    assert opening == london(2025, 3, 31, 9, 0) and opening.astimezone(UTC) == datetime(2025, 3, 31, 8, 0, tzinfo=UTC)
    assert opening.utcoffset() == timedelta(hours=1)  # 09:00 summer time
    assert not is_open(friday, WEEKDAYS, "Europe/London")
    assert when(opening, friday, "Europe/London") == "Monday at 09:00 (Europe/London)"


def test_the_autumn_clock_change_keeps_nine_oclock_local():
    friday = london(2025, 10, 24, 17, 45)  # summer time; the clocks go back on Sunday 26 October
    assert next_opening(friday, WEEKDAYS, "Europe/London").astimezone(UTC) == datetime(2025, 10, 27, 9, 0, tzinfo=UTC)


def test_open_hours_closing_time_lunch_and_the_same_day():
    hours = ["Mon-Fri 09:00-12:30 13:30-17:30"]
    wednesday = london(2025, 1, 15, 10, 0)
    assert is_open(wednesday, hours, "Europe/London") and next_opening(wednesday, hours, "Europe/London") is None
    assert next_opening(london(2025, 1, 15, 12, 45), hours, "Europe/London") == london(2025, 1, 15, 13, 30)
    early = london(2025, 1, 15, 7, 0)
    assert next_opening(early, hours, "Europe/London") == london(2025, 1, 15, 9, 0)
    assert when(london(2025, 1, 15, 9, 0), early, "Europe/London") == "today at 09:00 (Europe/London)"
    closing = london(2025, 1, 15, 17, 30)  # the end of a range is closed
    assert next_opening(closing, hours, "Europe/London") == london(2025, 1, 16, 9, 0)
    assert when(london(2025, 1, 16, 9, 0), closing, "Europe/London") == "tomorrow at 09:00 (Europe/London)"


def test_weekends_with_saturday_hours_and_a_range_of_days_that_wraps():
    hours = [WEEKDAYS, "Sat 10:00-14:00"]
    assert next_opening(london(2025, 1, 18, 9, 0), hours, "Europe/London") == london(2025, 1, 18, 10, 0)
    assert next_opening(london(2025, 1, 18, 15, 0), hours, "Europe/London") == london(2025, 1, 20, 9, 0)
    assert is_open(london(2025, 1, 19, 23, 0), "Fri-Mon 00:00-24:00", "Europe/London")  # Sunday, all day
    assert next_opening(london(2025, 1, 15, 12, 0), "fri-mon 00:00-24:00", "Europe/London") == london(2025, 1, 17, 0, 0)
    assert parse_hours("Saturday 10:00-14:00, Sun 10:00-12:00")[5:] == (((600, 840),), ((600, 720),))


def test_holidays_are_closed_all_day():
    friday = london(2025, 5, 23, 18, 0)
    opening = next_opening(friday, WEEKDAYS, "Europe/London", ["2025-05-26"])  # the bank holiday Monday
    assert opening == london(2025, 5, 27, 9, 0)
    assert when(opening, friday, "Europe/London") == "Tuesday at 09:00 (Europe/London)"
    far = london(2025, 12, 19, 18, 0)
    days_off = [f"2025-12-{d}" for d in range(22, 32)]
    opening = next_opening(far, WEEKDAYS, "Europe/London", days_off)
    assert opening == london(2026, 1, 1, 9, 0) and when(opening, far, "Europe/London") == "Thursday 1 January at 09:00 (Europe/London)"


def test_no_hours_means_always_open_and_bad_settings_are_refused_in_one_line(tmp_path):
    assert is_open(datetime(2025, 1, 18, 3, 0, tzinfo=UTC), []) and next_opening(datetime.now(UTC), "") is None
    for bad, message in (("Mon-Fri 9-5", "HH:MM-HH:MM"), ("Funday 09:00-10:00", "not a day"),
                         ("Mon 18:00-09:00", "within one day"), ("Mon 09:00-24:30", "within one day"), ("09:00-17:00", "days and times")):
        with pytest.raises(ConfigError, match=message):
            parse_hours(bad)
    from chatbot import load_config

    for setting, message in (("serve.time_zone=Mars/Olympus", "IANA time zone"), ("serve.holidays=2025-13-01", "YYYY-MM-DD")):
        config = load_config(tmp_path / "home", ["serve.business_hours=Mon-Fri 09:00-17:30", setting], env={})
        with pytest.raises(ConfigError, match=message) as raised:
            Schedule.from_settings(config.serve)
        assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="aware"):
        next_opening(datetime(2025, 1, 1, 12, 0), WEEKDAYS)


def test_the_hand_off_text_says_when_instead_of_shortly():
    text = away_text("Of course. I've passed your conversation to our support team; a person will reply here shortly.",
                     "Monday at 09:00 (Europe/London)")
    assert text.startswith("Of course. I've passed your conversation to our support team. Our team is back Monday at 09:00 "
                           "(Europe/London) and will answer here.")
    assert "shortly" not in text and "email address" in text


# --- the service: an out-of-hours hand-off ------------------------------------------------------------------------

FAQ = "id,question,answer\ngift-exp,Do gift cards expire?,Gift cards never expire.\n"
FRIDAY_EVENING = datetime(2025, 3, 28, 18, 0, tzinfo=UTC)  # 18:00 in London (GMT)
WEDNESDAY_NOON = datetime(2025, 3, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def service(home_config):
    from ui.service import SupportService

    home_config.serve.business_hours = [WEEKDAYS]
    home_config.serve.time_zone = "Europe/London"
    service = SupportService(home_config)
    service.bot.clock = lambda: FRIDAY_EVENING
    return service


def handed_off(service, question: str = "Where is my parcel?") -> str:
    conversation = service.bot.log.start("web")
    service.bot.log.add_message(conversation, "customer", question)
    service.talk_to_person(conversation)
    return conversation


def test_an_out_of_hours_hand_off_says_when_and_takes_an_email_that_no_export_holds(service, tmp_path, capsys):
    from ui.cli import main
    from ui.service import ServiceError

    conversation = handed_off(service)
    reply = service.history(conversation)[-1]["text"]
    assert "Our team is back Monday at 09:00 (Europe/London) and will answer here." in reply and "shortly" not in reply
    state = service.state(conversation)
    assert state["status"] == "handed_off" and state["away"] == "Monday at 09:00 (Europe/London)" and not state["email_left"]

    for bad in ("not an address", "a@b", "kim@example.com and more", "x" * 250 + "@example.com"):
        with pytest.raises(ServiceError, match="not an email address"):
            service.leave_email(conversation, bad)
    assert service.leave_email(conversation, "kim.lee@example.com")["email_left"]
    assert service.leave_email(conversation, " kim@example.org ")["email_left"]  # one per conversation: replaced
    assert service.state(conversation)["email_left"]
    agent = service.login("agent", "agent")["token"]
    assert service.review(agent, conversation)["contact_email"] == "kim@example.org"  # the agent answers there

    in_hours = service.bot.log.start("web")  # no hand-off while nobody was in: no address taken
    with pytest.raises(ServiceError, match="while they are away"):
        service.leave_email(in_hours, "kim@example.org")

    # An agent answers (and the customer rates the bot's reply): the conversation becomes training data, without the address.
    service.bot.kb.add([write(tmp_path / "faq.csv", FAQ)])
    service.send(agent, conversation, "edited", "Your parcel left our warehouse today.", "")
    assert service.state(conversation)["away"] == ""  # answered: no more email box
    out = tmp_path / "export"
    assert main(["logs", "export", "--out", str(out), "--json", "--home", str(service.config.home), "-q",
                 "--set", f"retrieval.embedder={service.config.retrieval.embedder}", "--set", f"model.path={service.config.model.path}"]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert counts["sft"]["train"] + counts["sft"]["heldout"] == 1
    exported = "".join(path.read_text(encoding="utf-8") for path in out.glob("*.jsonl"))
    assert "parcel" in exported and "kim@example.org" not in exported and "kim.lee@example.com" not in exported
    assert not any("kim@" in json.dumps(m) for m in service.history(conversation))


def test_a_hand_off_asked_in_a_message_out_of_hours_says_when_too(service):
    updates = list(service.chat("I want to talk to a person"))
    reply = updates[-1]["reply"]
    assert reply["handed_off"] and "back Monday at 09:00" in updates[-1]["text"]
    assert service.state(reply["conversation_id"])["away"]
    service.bot.clock = lambda: WEDNESDAY_NOON  # in hours: today's behaviour
    updates = list(service.chat("I want to talk to a person"))
    assert "shortly" in updates[-1]["text"] and not service.state(updates[-1]["reply"]["conversation_id"])["away"]


def test_the_queue_puts_out_of_hours_hand_offs_first_when_the_day_starts(service):
    service.bot.clock = lambda: WEDNESDAY_NOON
    early = handed_off(service, "First, in hours")
    service.bot.clock = lambda: FRIDAY_EVENING
    overnight = handed_off(service, "Second, out of hours")
    service.bot.clock = lambda: WEDNESDAY_NOON
    late = handed_off(service, "Third, in hours")
    agent = service.login("agent", "agent")["token"]
    items = service.queue(agent)["items"]
    assert [i["conversation_id"] for i in items] == [overnight, early, late]
    assert items[0]["after_hours"] and items[0]["why"].endswith("(handed off out of hours)") and not items[1]["after_hours"]

    service.send(agent, overnight, "rejected", "Sorry for the wait: here is the answer.", "")
    service.bot.log.add_message(overnight, "customer", "Thanks, one more thing")  # back in the queue, answered once already
    assert [i["conversation_id"] for i in service.queue(agent)["items"]] == [early, late, overnight]


def test_the_widget_shows_the_email_box_from_the_state_and_takes_the_address(service):
    from fastapi.testclient import TestClient

    from ui.app import build_app

    origin = {"Origin": "http://testserver"}  # the bot's own origin
    with TestClient(build_app(service.config, service)) as client:
        handed = client.post("/api/widget/talk_to_person", json={"conversation_id": ""}, headers=origin).json()
        assert handed["status"] == "handed_off" and handed["away"] == "Monday at 09:00 (Europe/London)" and not handed["email_left"]
        bad = client.post("/api/widget/email", json={"conversation_id": handed["conversation_id"], "email": "kim"}, headers=origin)
        assert bad.status_code == 400 and "not an email address" in bad.json()["error"]
        left = client.post("/api/widget/email", json={"conversation_id": handed["conversation_id"], "email": "kim@example.com"},
                           headers=origin)
        assert left.status_code == 200 and left.json()["email_left"]
        assert "kim@example.com" not in left.text  # the address is never sent back
