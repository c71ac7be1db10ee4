"""The answering engine: configuration, home folder, prompts, generation, the conversation log."""

from .config import Config, ConfigError, as_dict, default_home, load_config, save_settings

__all__ = ["Config", "ConfigError", "as_dict", "default_home", "load_config", "save_settings"]
