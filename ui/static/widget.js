/* supportbot chat widget: plain JavaScript, no build step, no dependency (docs/serving.md#the-chat-widget).
 *
 *   <script src="https://BOT/widget.js" defer
 *           data-title="Help" data-greeting="Hi!" data-color="#0f766e" data-position="left" data-lang="fr"></script>
 *
 * It lives in an open shadow root, so the page's CSS cannot reach it and its CSS cannot reach the page, and it adds
 * no globals. The conversation id is kept in the site's localStorage: the chat follows the visitor across the site's
 * pages and reloads until they start a new one. It talks to BOT/api/widget/ (ui/widget_api.py). */
(() => {
  "use strict";
  const TAG = "supportbot-widget";
  const script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  if (!script || !script.src) return;
  if (document.body) main(script);
  else document.addEventListener("DOMContentLoaded", () => main(script));  // loaded in <head> without defer

function main(script) {
  if (document.querySelector(TAG)) return;  // loaded twice: one widget
  const BASE = script.src.replace(/\/widget\.js(?:[?#].*)?$/, "");
  const API = BASE + "/api/widget";
  const data = script.dataset;

  const LABELS = {
    en: {open: "Open chat", close: "Close chat", support: "support", placeholder: "Type your question…", send: "Send",
      person: "Talk to a person", leave: "No longer need a person", waiting: "Waiting for a person… An agent will reply here.",
      fresh: "New conversation", agent: "Support agent", source: "Source", sources: "Sources", up: "Helpful",
      down: "Not helpful", comment: "Tell us more (optional)", commentSend: "Send comment", thanks: "Thanks for your feedback.",
      more: "Thanks! Tell us more below if you like.", removed: "Rating removed.", typing: "The assistant is typing",
      unavailable: "Sorry, the chat is not available on this site.", offline: "Could not reach support. Please try again.",
      you: "You", bot: "Assistant", log: "Conversation", unread: "new reply", csat: "How did we do? Rate us from 1 to 5",
      rated: "Thanks for rating us!", email: "Your email address",
      away: "Our team is back {}. Leave your email address for the answer:", sent: "Thanks! We'll also send the answer there."},
    fr: {open: "Ouvrir le chat", close: "Fermer le chat", support: "assistance", placeholder: "Posez votre question…",
      send: "Envoyer", person: "Parler à une personne", leave: "Je n'ai plus besoin d'une personne",
      waiting: "En attente d'une personne… Un conseiller vous répondra ici.", fresh: "Nouvelle conversation",
      agent: "Conseiller", source: "Source", sources: "Sources", up: "Utile", down: "Pas utile",
      comment: "Dites-nous en plus (facultatif)", commentSend: "Envoyer le commentaire", thanks: "Merci de votre avis.",
      more: "Merci ! Dites-nous en plus ci-dessous si vous le souhaitez.", removed: "Avis retiré.",
      typing: "L'assistant écrit", unavailable: "Désolé, le chat n'est pas disponible sur ce site.",
      offline: "Impossible de joindre l'assistance. Réessayez.", you: "Vous", bot: "Assistant", log: "Conversation",
      unread: "nouvelle réponse", csat: "Notre aide vous a-t-elle plu ? Notez-nous de 1 à 5", rated: "Merci pour votre note !",
      email: "Votre adresse e-mail", away: "Notre équipe revient {}. Laissez votre e-mail pour recevoir la réponse :",
      sent: "Merci ! Nous enverrons aussi la réponse à cette adresse."},
    de: {open: "Chat öffnen", close: "Chat schließen", support: "Support", placeholder: "Ihre Frage…", send: "Senden",
      person: "Mit einem Menschen sprechen", leave: "Ich brauche keinen Menschen mehr",
      waiting: "Warten auf einen Menschen… Ein Mitarbeiter antwortet hier.", fresh: "Neues Gespräch",
      agent: "Support-Mitarbeiter", source: "Quelle", sources: "Quellen", up: "Hilfreich", down: "Nicht hilfreich",
      comment: "Mehr dazu (optional)", commentSend: "Kommentar senden", thanks: "Danke für Ihr Feedback.",
      more: "Danke! Schreiben Sie uns gern unten mehr.", removed: "Bewertung entfernt.", typing: "Der Assistent schreibt",
      unavailable: "Der Chat ist auf dieser Website leider nicht verfügbar.",
      offline: "Der Support ist nicht erreichbar. Bitte erneut versuchen.", you: "Sie", bot: "Assistent",
      log: "Gespräch", unread: "neue Antwort", csat: "Wie waren wir? Bewerten Sie uns von 1 bis 5",
      rated: "Danke für Ihre Bewertung!", email: "Ihre E-Mail-Adresse",
      away: "Unser Team ist {} zurück. Ihre E-Mail-Adresse für die Antwort:", sent: "Danke! Wir senden die Antwort auch dorthin."},
    es: {open: "Abrir el chat", close: "Cerrar el chat", support: "soporte", placeholder: "Escribe tu pregunta…",
      send: "Enviar", person: "Hablar con una persona", leave: "Ya no necesito una persona",
      waiting: "Esperando a una persona… Un agente responderá aquí.", fresh: "Nueva conversación", agent: "Agente",
      source: "Fuente", sources: "Fuentes", up: "Útil", down: "No útil", comment: "Cuéntanos más (opcional)",
      commentSend: "Enviar comentario", thanks: "Gracias por tu opinión.", more: "¡Gracias! Cuéntanos más abajo si quieres.",
      removed: "Valoración eliminada.", typing: "El asistente está escribiendo",
      unavailable: "Lo sentimos, el chat no está disponible en este sitio.",
      offline: "No se pudo contactar con soporte. Inténtalo de nuevo.", you: "Tú", bot: "Asistente", log: "Conversación",
      unread: "respuesta nueva", csat: "¿Qué tal lo hicimos? Puntúanos del 1 al 5", rated: "¡Gracias por tu valoración!",
      email: "Tu correo electrónico", away: "Nuestro equipo vuelve {}. Deja tu correo para recibir la respuesta:",
      sent: "¡Gracias! También enviaremos la respuesta allí."}
  };
  const T = LABELS[String(data.lang || document.documentElement.lang || "en").toLowerCase().slice(0, 2)] || LABELS.en;

  // --- what this browser remembers (a page that forbids storage still gets a working chat, for that page) ---------
  const KEY = "supportbot-widget:" + BASE;
  const load = (store) => { try { return JSON.parse(window[store].getItem(KEY)) || {}; } catch (e) { return {}; } };
  const save = (store, value) => { try { window[store].setItem(KEY, JSON.stringify(value)); } catch (e) { /* off */ } };
  const kept = load("localStorage");
  const state = {
    id: typeof kept.id === "string" ? kept.id : "",
    visitor: typeof kept.visitor === "string" && kept.visitor ? kept.visitor
      : Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => (b + 256).toString(16).slice(1)).join(""),
    open: !!load("sessionStorage").open,  // this tab's: a new tab starts with the panel closed
    config: null, messages: [], status: "", busy: false, failed: false, loaded: false, rated: 0,
    closed: false, csat: false, away: "", emailLeft: false
  };
  const remember = () => {
    save("localStorage", {id: state.id, visitor: state.visitor});
    save("sessionStorage", {open: state.open});
  };

  // --- the DOM, in an open shadow root ---------------------------------------------------------------------------
  const accent = data.color && CSS.supports("color", data.color) ? data.color : "#2563eb";
  const side = data.position === "left" ? "left" : "right";
  const STYLE = `
.root{all:initial;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;--accent:${accent}}
.root *{box-sizing:border-box;font:inherit;color:inherit}
[hidden]{display:none!important}
button{cursor:pointer;border:0;background:none;margin:0;padding:0}
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.launcher,.panel{position:fixed;${side}:20px;z-index:2147483000}
.launcher{bottom:20px;width:60px;height:60px;border-radius:50%;background:var(--accent);box-shadow:0 6px 20px #0004}
.launcher svg{width:28px;height:28px;fill:#fff;vertical-align:middle}
.dot{position:absolute;top:4px;right:4px;width:14px;height:14px;border-radius:50%;background:#dc2626;border:2px solid #fff}
.panel{bottom:92px;width:380px;height:600px;max-height:calc(100vh - 112px);background:#fff;border-radius:14px;
 box-shadow:0 12px 40px #0005;display:flex;flex-direction:column;overflow:hidden}
.head{display:flex;align-items:center;gap:8px;padding:12px 12px 12px 16px;background:var(--accent)}
.head h2{flex:1;margin:0;font-size:16px;font-weight:600;color:#fff}
.head button{width:36px;height:36px;border-radius:8px}
.head svg{width:20px;height:20px;fill:#fff;vertical-align:middle}
.log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:10px;background:#f9fafb}
.msg{max-width:85%;padding:9px 12px;border-radius:14px;overflow-wrap:anywhere}
.msg p{margin:0 0 6px}.msg p:last-child{margin:0}
.msg a{color:var(--accent)}
.customer{align-self:flex-end;background:var(--accent);color:#fff;border-bottom-right-radius:4px}
.bot,.agent,.greeting{align-self:flex-start;background:#fff;border:1px solid #e5e7eb;border-bottom-left-radius:4px}
.agent{border-color:#a7f3d0;background:#ecfdf5}
.who{display:block;font-size:12px;font-weight:600;color:#047857}
.sources{margin-top:6px;font-size:13px;color:#4b5563}
.rate,.comment{display:flex;gap:6px;margin-top:6px}
.rate button{width:32px;height:32px;border-radius:8px;border:1px solid #e5e7eb;background:#fff}
.rate button[aria-pressed=true]{background:var(--accent)}
.rate svg{width:16px;height:16px;fill:#4b5563;vertical-align:middle}
.rate [aria-pressed=true] svg{fill:#fff}
.comment input{flex:1;min-width:0;border:1px solid #d1d5db;border-radius:8px;padding:6px 8px}
.small{border-radius:8px;padding:6px 10px;background:#eef2ff;font-size:13px}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chips button{border:1px solid var(--accent);color:var(--accent);border-radius:99px;padding:6px 12px;background:#fff;font-size:13px}
.typing span{display:inline-block;width:7px;height:7px;margin-right:4px;border-radius:50%;background:#9ca3af;animation:b 1s infinite}
.typing span:nth-child(2){animation-delay:.15s}.typing span:nth-child(3){animation-delay:.3s}
@keyframes b{50%{opacity:.3}}
@media (prefers-reduced-motion:reduce){.typing span{animation:none}}
.notice{padding:8px 14px;font-size:13px;border-top:1px solid #e5e7eb}
.notice:empty{display:none}
.error{color:#b91c1c}
.waiting{display:flex;align-items:center;gap:8px;padding:8px 14px;background:#fffbeb;border-top:1px solid #fde68a;font-size:13px}
.waiting span{flex:1}
.csat,.away{display:flex;flex-wrap:wrap;gap:6px;padding:8px 14px;background:#eff6ff;font-size:13px}
.csat>span,.away>span{flex:1 1 100%}
.scores button{width:36px;height:36px;margin-right:4px;border-radius:8px;border:1px solid var(--accent);background:#fff}
.csat input,.away input{flex:1;min-width:0;border:1px solid #d1d5db;border-radius:8px;padding:6px 8px}
.form{display:flex;gap:8px;padding:10px 12px;border-top:1px solid #e5e7eb}
.form textarea{flex:1;resize:none;border:1px solid #d1d5db;border-radius:10px;padding:10px;min-height:44px;max-height:120px}
.form button{border-radius:10px;padding:0 16px;min-height:44px;background:var(--accent);color:#fff;font-weight:600}
button:disabled{opacity:.5;cursor:default}
.actions{padding:0 12px 10px}
.actions button{font-size:13px;text-decoration:underline;padding:4px 2px}
@media (max-width:520px){.panel{inset:0;width:100%;height:100%;max-height:none;border-radius:0}
 .open .launcher{display:none}.head button,.rate button,.actions button,.scores button{min-width:44px;min-height:44px}}`;
  const ICONS = {
    chat: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z",
    close: "M18.3 5.7 12 12l6.3 6.3-1.4 1.4L10.6 13.4 4.3 19.7l-1.4-1.4L9.2 12 2.9 5.7l1.4-1.4 6.3 6.3 6.3-6.3z",
    fresh: "M19 13h-6v6h-2v-6H5v-2h6V5h2v6h6z",
    up: "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6C6.2 7.9 6 8.4 6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z",
    down: "M22 3h-4v12h4V3zM2 14a2 2 0 0 0 2 2h6.3l-1 4.6v.3c0 .4.2.8.4 1.1l1.1 1 6.6-6.6c.4-.3.6-.8.6-1.4V5a2 2 0 0 0-2-2H7c-.8 0-1.5.5-1.8 1.2l-3 7.1c-.1.2-.2.5-.2.7v2z"
  };

  // An element: attributes (text: its text; onX: a listener; null/false: left out) and children.
  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }
  function icon(name) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.innerHTML = `<path d="${ICONS[name]}"/>`;  // a constant above, never a server's or a visitor's text
    return svg;
  }
  const button = (onclick, attrs = {}, children = []) => el("button", {type: "button", onclick, ...attrs}, children);

  const host = document.createElement(TAG);
  // The page's CSS can still reach the host element itself: it takes no room and no style from the page.
  host.setAttribute("style", "all:initial!important;display:block!important;position:static!important;" +
    "width:0!important;height:0!important;margin:0!important;padding:0!important;border:0!important");
  const shadow = host.attachShadow({mode: "open"});
  const ui = {};
  ui.dot = el("span", {class: "dot", hidden: true});
  ui.launcher = button(() => toggle(!state.open), {class: "launcher", "aria-expanded": "false",
    "aria-controls": "sb-panel", "aria-label": T.open}, [icon("chat"), ui.dot]);
  ui.title = el("h2", {id: "sb-title", text: data.title || T.bot});
  ui.fresh = button(newConversation, {"aria-label": T.fresh, title: T.fresh}, [icon("fresh")]);
  ui.close = button(() => toggle(false), {"aria-label": T.close, title: T.close}, [icon("close")]);
  ui.log = el("div", {class: "log", role: "log", "aria-live": "polite", "aria-label": T.log, tabindex: "0"});
  ui.waiting = el("div", {class: "waiting", hidden: true},
    [el("span", {text: T.waiting}), button(leaveQueue, {class: "small", text: T.leave})]);
  ui.notice = el("div", {class: "notice", role: "status"});
  // A closed conversation's 1-5 rating, asked once; an email address for a hand-off while the team is away.
  ui.note = el("input", {type: "text", placeholder: T.comment, "aria-label": T.comment, maxlength: "2000"});
  ui.csat = el("div", {class: "csat", role: "group", "aria-label": T.csat, hidden: true}, [el("span", {text: T.csat}),
    el("div", {class: "scores"}, [1, 2, 3, 4, 5].map((n) => button(() => rateConversation(n), {text: n}))), ui.note]);
  ui.email = el("input", {type: "email", placeholder: "you@example.com", "aria-label": T.email, autocomplete: "email"});
  ui.awayText = el("span");
  ui.away = el("form", {class: "away", hidden: true, onsubmit: (event) => { event.preventDefault(); leaveEmail(); }},
    [ui.awayText, ui.email, el("button", {type: "submit", class: "small", text: T.send})]);
  ui.input = el("textarea", {rows: "1", placeholder: T.placeholder, "aria-label": T.placeholder.replace("…", ""),
    enterkeyhint: "send"});
  ui.send = el("button", {type: "submit", text: T.send});
  ui.person = button(talkToPerson, {text: T.person});
  ui.panel = el("div", {class: "panel", id: "sb-panel", role: "dialog", "aria-labelledby": "sb-title", hidden: true}, [
    el("div", {class: "head"}, [ui.title, ui.fresh, ui.close]), ui.log, ui.waiting, ui.away, ui.csat, ui.notice,
    el("form", {class: "form", onsubmit: (event) => { event.preventDefault(); ask(ui.input.value); }}, [ui.input, ui.send]),
    el("div", {class: "actions"}, [ui.person])]);
  ui.root = el("div", {class: "root"}, [ui.panel, ui.launcher]);
  shadow.append(el("style", {text: STYLE}), ui.root);
  document.body.append(host);

  ui.input.addEventListener("keydown", (event) => {  // Enter sends, Shift+Enter starts a new line
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); ask(ui.input.value); }
  });
  ui.input.addEventListener("input", () => {
    ui.input.style.height = "auto";
    ui.input.style.height = Math.min(ui.input.scrollHeight, 120) + "px";
  });
  ui.panel.addEventListener("keydown", (event) => { if (event.key === "Escape") toggle(false); });

  // --- the API ---------------------------------------------------------------------------------------------------
  async function call(method, path, body) {
    const response = await fetch(API + path, {method, mode: "cors", credentials: "omit",
      headers: body ? {"Content-Type": "application/json"} : {}, body: body ? JSON.stringify(body) : undefined});
    if (response.ok) return response;
    const json = await response.json().catch(() => ({}));
    throw Object.assign(new Error(json.error || T.offline), {shown: !!json.error});
  }
  const getJSON = async (path) => (await call("GET", path)).json();
  const postJSON = async (path, body) => (await call("POST", path, body)).json();

  async function start() {  // once per page: the company's greeting, then the conversation under way
    if (state.config) return;
    try {
      state.config = await getJSON("/config");
    } catch (error) {  // refused (a site not in serve.allowed_origins) or unreachable
      state.failed = true;
      notice(T.unavailable, true);
      ui.input.disabled = ui.send.disabled = ui.person.disabled = true;
      throw error;
    }
    state.failed = ui.input.disabled = ui.send.disabled = ui.person.disabled = false;
    if (!data.title) ui.title.textContent = `${state.config.company} ${T.support}`;
    ui.input.maxLength = state.config.max_message_chars || 2000;
    await refresh();
  }

  async function refresh() {
    if (!state.id) return render();
    try {
      const conversation = await getJSON("/conversation?conversation_id=" + encodeURIComponent(state.id));
      if (!state.busy) show(conversation);  // an answer streaming in now brings its own
    } catch (error) { /* the next poll tries again */ }
  }

  function show(conversation) {  // the logged conversation replaces what the widget showed
    const before = signature(), agents = count("agent");
    Object.assign(state, {id: conversation.conversation_id, messages: conversation.messages, status: conversation.status,
      closed: !!conversation.closed, csat: !!conversation.rated, away: conversation.away || "", emailLeft: !!conversation.email_left});
    remember();
    if (state.loaded && !state.open && count("agent") > agents) unread(true);
    state.loaded = true;
    if (signature() !== before || !ui.log.childElementCount) render();
  }
  const count = (role) => state.messages.filter((m) => m.role === role).length;
  const signature = () => [state.status, state.closed, state.csat, state.away, state.emailLeft].join() + "|" +
    state.messages.map((m) => `${m.id}:${m.rating}`).join(",");

  // --- what the visitor does -------------------------------------------------------------------------------------
  function toggle(open, restoring) {  // restoring: reopened on a new page, without taking the page's focus
    state.open = open;
    remember();
    ui.panel.hidden = !open;
    ui.root.classList.toggle("open", open);
    ui.launcher.setAttribute("aria-expanded", String(open));
    ui.launcher.firstChild.replaceWith(icon(open ? "close" : "chat"));
    unread(false);
    if (open) {
      start().then(() => { if (!restoring) ui.input.focus(); scrollDown(); }, () => { if (!restoring) ui.close.focus(); });
      poll();
    } else if (!restoring) {
      ui.launcher.focus();
    }
  }

  async function ask(text) {
    text = (text || "").trim();
    if (!text || state.busy || state.failed) return;
    state.busy = ui.send.disabled = true;
    ui.input.value = ui.input.style.height = "";
    notice("");
    state.messages.push({id: 0, role: "customer", text, sources: []});
    render();
    const draft = el("div", {class: "text"});
    ui.log.append(el("div", {class: "msg bot", role: "article", "aria-label": T.bot}, [draft]));
    typing(draft, "");
    try {
      const response = await call("POST", "/chat", {message: text, conversation_id: state.id, visitor: state.visitor});
      let done = false;
      await events(response, (event) => {
        if (event.error) throw Object.assign(new Error(event.error), {shown: true});
        if (event.done) {  // the logged turn replaces the draft: the policy may have changed the streamed text
          done = true;
          state.busy = false;
          show(event.conversation);
          render();
        } else {
          typing(draft, event.text);
        }
      });
      if (!done) throw new Error(T.offline);
    } catch (error) {
      state.messages = state.messages.filter((m) => m.id);
      render();
      ui.input.value = ui.input.value || text;  // the question is not lost
      notice(error.shown ? error.message : T.offline, true);
    }
    state.busy = ui.send.disabled = false;
    if (state.open) ui.input.focus();
    poll();
  }

  async function events(response, handle) {  // server-sent events of a POST: blocks of "data: {json}"
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const data = buffer.slice(0, end).split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("");
        buffer = buffer.slice(end + 2);
        if (data.trim()) handle(JSON.parse(data));
      }
      if (done) return;
    }
  }

  async function rate(message, up, comment = "") {
    // A thumb rates at once; the same thumb again clears the rating; a comment sent after it joins that rating.
    const thumbsUp = comment ? message.rating === 1 : message.rating === (up ? 1 : -1) ? null : up;
    try {
      await postJSON("/rate", {conversation_id: state.id, message_id: message.id, thumbs_up: thumbsUp, comment});
    } catch (error) { return failed(error); }
    message.rating = thumbsUp === null ? 0 : thumbsUp ? 1 : -1;
    message.comment = comment;
    state.rated = comment || thumbsUp === null ? 0 : message.id;
    render();
    notice(comment ? T.thanks : thumbsUp === null ? T.removed : T.more);
    const box = ui.log.querySelector(".comment input");
    if (box && matchMedia("(pointer: fine)").matches) box.focus();  // on a phone it would pop the keyboard up
  }

  async function talkToPerson() {
    if (state.failed) return;
    try { show(await postJSON("/talk_to_person", {conversation_id: state.id})); } catch (error) { return failed(error); }
    render();
    poll();
  }

  async function leaveQueue() {
    try { show(await postJSON("/leave_queue", {conversation_id: state.id})); } catch (error) { return failed(error); }
    render();
    ui.input.focus();
  }

  async function rateConversation(score) {
    try {
      show(await postJSON("/csat", {conversation_id: state.id, score, comment: ui.note.value.trim()}));
    } catch (error) { return failed(error); }
    ui.note.value = "";
    render();
    notice(T.rated);
  }

  async function leaveEmail() {
    const email = ui.email.value.trim();
    if (!email) return;
    try { show(await postJSON("/email", {conversation_id: state.id, email})); } catch (error) { return failed(error); }
    ui.email.value = "";
    render();
    notice(T.sent);
  }

  function newConversation() {
    Object.assign(state, {id: "", messages: [], status: "", rated: 0, closed: false, csat: false, away: "", emailLeft: false});
    remember();
    notice("");
    render();
    ui.input.focus();
  }

  const failed = (error) => notice(error && error.shown ? error.message : T.offline, true);

  function notice(text, error) {
    ui.notice.textContent = text || "";
    ui.notice.classList.toggle("error", !!error);
    ui.notice.setAttribute("role", error ? "alert" : "status");
  }

  function unread(on) {
    ui.dot.hidden = !on;
    ui.launcher.setAttribute("aria-label", (state.open ? T.close : T.open) + (on ? ` (${T.unread})` : ""));
  }

  // Agents' replies appear live: the conversation is polled while the panel is open or a person is awaited.
  let timer = 0;
  function poll() {
    const wanted = () => state.id && !state.failed && (state.open || state.status === "handed_off");
    if (timer || !wanted()) return;
    timer = setTimeout(async () => {
      if (!state.busy && !document.hidden && wanted()) await refresh();
      timer = 0;
      poll();
    }, 1000 * Math.max(1, (state.config && state.config.poll_seconds) || 2));
  }

  // --- rendering -------------------------------------------------------------------------------------------------
  function render() {
    const old = ui.log.querySelector(".comment input");  // a comment being typed survives a poll's re-render
    const typed = old ? old.value : "", focused = old && shadow.activeElement === old;
    ui.log.textContent = "";
    if (!state.messages.length) {
      const greeting = data.greeting || (state.config && state.config.greeting);
      if (greeting) ui.log.append(el("div", {class: "msg greeting"}, [markdown(greeting)]));
      const questions = (state.config && state.config.suggested_questions) || [];
      if (questions.length) ui.log.append(el("div", {class: "chips"}, questions.map((q) => button(() => ask(q), {text: q}))));
    }
    for (const m of state.messages) ui.log.append(bubble(m));
    const waiting = state.status === "handed_off";
    ui.waiting.hidden = !waiting;
    ui.person.hidden = waiting;
    ui.csat.hidden = !(state.closed && !state.csat && state.messages.length);
    ui.away.hidden = !(state.away && !state.emailLeft);
    ui.awayText.textContent = T.away.replace("{}", state.away);
    const box = ui.log.querySelector(".comment input");
    if (box && typed) box.value = typed;
    if (box && focused) box.focus();
    scrollDown();
  }

  function bubble(m) {
    const role = m.role === "customer" || m.role === "agent" ? m.role : "bot";
    const node = el("div", {class: "msg " + role, role: "article", "aria-label": {customer: T.you, agent: T.agent, bot: T.bot}[role]},
      [role === "agent" && el("span", {class: "who", text: T.agent}), el("div", {class: "text"}, [markdown(m.text)])]);
    if (role !== "bot") return node;
    if (m.sources && m.sources.length) node.append(sources(m.sources));
    if (!m.id) return node;
    node.append(el("div", {class: "rate"}, [true, false].map((up) => button(() => rate(m, up), {
      "aria-label": up ? T.up : T.down, title: up ? T.up : T.down, "aria-pressed": String(m.rating === (up ? 1 : -1))},
      [icon(up ? "up" : "down")]))));
    if (state.rated === m.id) {
      const input = el("input", {type: "text", placeholder: T.comment, "aria-label": T.comment, maxlength: "2000"});
      const send = () => input.value.trim() && rate(m, m.rating === 1, input.value.trim());
      input.addEventListener("keydown", (event) => { if (event.key === "Enter") { event.preventDefault(); send(); } });
      node.append(el("div", {class: "comment"}, [input, button(send, {class: "small", text: T.send, "aria-label": T.commentSend})]));
    }
    return node;
  }

  function typing(node, text) {  // the draft as it streams: typing dots until its first words
    node.textContent = "";
    node.append(text.trim() ? markdown(text)
      : el("span", {class: "typing", role: "img", "aria-label": T.typing}, [el("span"), el("span"), el("span")]));
    scrollDown();
  }

  function sources(list) {
    const line = el("div", {class: "sources"}, [`${list.length === 1 ? T.source : T.sources}: `]);
    list.forEach((s, i) => {
      const label = (s.n ? `[${s.n}] ` : "") + (s.title || s.url);
      line.append(i ? "; " : "", /^https?:\/\//i.test(s.url || "")
        ? el("a", {href: s.url, target: "_blank", rel: "noopener noreferrer", text: label}) : label);
    });
    return line;
  }

  // A little Markdown, built as DOM nodes, never parsed as HTML: paragraphs, line breaks, **bold**, *italic*, `code`
  // and [links](https://...). Nothing in an answer or the greeting can run in the page.
  function markdown(text) {
    const fragment = document.createDocumentFragment();
    for (const para of String(text).split(/\n{2,}/)) {
      const p = el("p");
      para.split("\n").forEach((line, i) => { if (i) p.append(el("br")); inline(line, p); });
      fragment.append(p);
    }
    return fragment;
  }

  function inline(text, parent) {
    const pattern = /\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*|`([^`]+)`/g;
    let at = 0, match;
    while ((match = pattern.exec(text))) {
      parent.append(text.slice(at, match.index));
      parent.append(match[1] ? el("a", {href: match[2], target: "_blank", rel: "noopener noreferrer", text: match[1]})
        : el(match[3] ? "strong" : match[4] ? "em" : "code", {text: match[3] || match[4] || match[5]}));
      at = pattern.lastIndex;
    }
    parent.append(text.slice(at));
  }

  const scrollDown = () => { ui.log.scrollTop = ui.log.scrollHeight; };

  // A conversation under way (another page of the site, a reload): the panel comes back as the visitor left it.
  if (state.open) toggle(true, true);
  else if (state.id) start().then(poll, () => {});
}
})();
