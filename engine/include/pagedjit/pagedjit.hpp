// Umbrella header: the API (engine, arguments, options, errors, the CPU
// reference). The driver layer (pagedjit/driver.hpp) is included on its own.
#pragma once
#include "pagedjit/device.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/ragged_attention.hpp"
#include "pagedjit/reference.hpp"
#include "pagedjit/tensor.hpp"
#include "pagedjit/version.hpp"
