"""Task generators / loaders: ``ruler`` (synthetic, offline), ``niah`` (length x depth grid), ``longbench``."""
