#pragma once
namespace pagedjit {
constexpr const char* kVersion = "0.1.0";
}
