// Placeholder: the C API over toml++ lands with the inventory loader.
#pragma once
int ctoml_placeholder(void);
