// Umbrella header: everything a host program needs.
#pragma once
#include "pagedjit/device.hpp"
#include "pagedjit/driver.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/paged_attention.hpp"
#include "pagedjit/reference.hpp"
#include "pagedjit/tensor.hpp"
#include "pagedjit/version.hpp"
