"""The answering engine: configuration, home folder, prompts, generation, the conversation log."""

from .config import Config, ConfigError, as_dict, default_home, load_config, save_settings
from .engine import Reply, Response, SupportBot, make_backend, open_kb
from .log import ConversationLog, LogError
from .prompt import Source, Turn, build_messages, system_prompt

__all__ = [
    "Config", "ConfigError", "as_dict", "default_home", "load_config", "save_settings", "Reply", "Response",
    "SupportBot", "make_backend", "open_kb", "ConversationLog", "LogError", "Source", "Turn", "build_messages", "system_prompt",
]
