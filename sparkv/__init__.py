from sparkv.config import EvictionConfig, PressConfig, SparKConfig, ThinKConfig, parse_press  # noqa: F401
