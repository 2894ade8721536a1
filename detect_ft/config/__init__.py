"""The one typed config: dataclass sections (:mod:`.schema`) loaded from YAML with dotted ``key=value``
overrides; converting and checking values against their type hints (:mod:`.values`).

    from detect_ft.config import load_config
    cfg = load_config("configs/demo.yaml", ["train.epochs=5"])
"""

from detect_ft.config.schema import Config, config_from_dict, config_to_dict, load_config, save_config

__all__ = ["Config", "config_from_dict", "config_to_dict", "load_config", "save_config"]
