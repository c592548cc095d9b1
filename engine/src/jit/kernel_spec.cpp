#include "jit/kernel_spec.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "pagedjit/errors.hpp"
#include "pagedjit/version.hpp"
#include "pj_params.cuh"

namespace pagedjit::jit {
namespace {

const char* tag(DType d) {
  switch (d) {
    case DType::f32:
      return "pj::f32";
    case DType::f16:
      return "pj::f16";
    case DType::bf16:
      return "pj::bf16";
    case DType::e4m3:
      return "pj::e4m3";
    case DType::e5m2:
      return "pj::e5m2";
    case DType::i32:
      break;
  }
  throw InvalidArgument("KernelSpec.dtype", "fp32, fp16, bf16, e4m3 or e5m2", dtype_name(d));
}

}  // namespace

const char* compute_name(Compute c) {
  return c == Compute::mma ? "mma" : "simt";
}

const char* merge_name(Merge m) {
  switch (m) {
    case Merge::none:
      return "none";
    case Merge::global:
      return "global";
    case Merge::cluster:
      return "cluster";
  }
  return "?";
}

// Both builders may describe a rejected config, so they name numbers only for
// warps in 1..8 and tiles in [16, 256]: outside, 16 * warps could overflow.
std::string tile_shape_rule(int warps) {
  if (warps < 1 || warps > 8)
    return "a multiple of 16 * warps, or of 16 with warps a multiple of tile_tokens / 16 (warps in 1..8)";
  return fmt::format("a multiple of 16 * warps = {}, or of 16 with warps a multiple of tile_tokens / 16", 16 * warps);
}

std::string dim_split_rule(int tile_tokens, int warps) {
  if (warps < 1 || warps > 8 || tile_tokens < 16 || tile_tokens > 256)
    return "a dim split needs fp16/bf16/fp8 on tensor cores and output dims a multiple of 16 * warps * 16 / "
           "tile_tokens (warps in 1..8, tile_tokens in [16, 256])";
  return fmt::format(
      "a dim split needs fp16/bf16/fp8 on tensor cores and output dims a multiple of {} ({} warps on {}-token tiles "
      "split them {} ways)",
      16 * pj::dim_split(tile_tokens, warps), warps, tile_tokens, pj::dim_split(tile_tokens, warps));
}

int default_v_dims(int head_dim) {
  const int chunks = (head_dim + 255) / 256;
  return ((head_dim + chunks - 1) / chunks + 15) / 16 * 16;
}

const char* schedule_name(Schedule s) {
  return s == Schedule::device ? "device" : "host";
}

bool arch_has_clusters(const std::string& arch) {
  return arch.rfind("sm_", 0) == 0 && std::atoi(arch.c_str() + 3) >= 90;
}

namespace {

// The launch values a decode spec compiles in, for readable(): "" when none.
std::string fixed_values(const KernelSpec& k) {
  std::string s;
  if (k.page_shift != pj::kUnsetPageShift) s += fmt::format(" page{}", 1LL << std::clamp(k.page_shift, 0, 62));
  if (k.group != pj::kUnsetGroup) s += fmt::format(" group{}", k.group);
  if (k.splits != pj::kUnsetSplits) s += fmt::format(" splits{}", k.splits);
  return s.empty() ? s : " fixed:" + s;
}

// Whether any decode launch value is compiled in.
bool any_fixed(const KernelSpec& k) {
  return k.page_shift != pj::kUnsetPageShift || k.group != pj::kUnsetGroup || k.splits != pj::kUnsetSplits;
}

// The decode template's rules for its compiled-in launch values
// (pj::DecodeConsts and paged_decode's static_asserts), in words.
void check_fixed(const KernelSpec& k) {
  if (k.page_shift < pj::kUnsetPageShift || k.page_shift > 30)
    throw InvalidArgument("KernelSpec.page_shift", "0..30, or -1 (unset)", std::to_string(k.page_shift));
  if (k.group < pj::kUnsetGroup)
    throw InvalidArgument("KernelSpec.group", "a positive group, or 0 (unset)", std::to_string(k.group));
  if (k.splits < pj::kUnsetSplits)
    throw InvalidArgument("KernelSpec.splits", "a positive split count, or 0 (unset)", std::to_string(k.splits));
  if (k.splits == pj::kUnsetSplits) return;
  if (k.schedule == Schedule::device)
    throw InvalidArgument("KernelSpec.splits", "0 (unset) with the device schedule (the kernel plans its partitions)",
                          std::to_string(k.splits));
  if ((k.merge == Merge::none) != (k.splits == 1))
    throw InvalidArgument("KernelSpec.splits", "1 exactly with merge none",
                          fmt::format("{} with merge {}", k.splits, merge_name(k.merge)));
}

// The prefill kernel's rules (paged_prefill.cuh's static_asserts), in words.
void check_prefill(const KernelSpec& k) {
  if (k.q_dtype != DType::f16 && k.q_dtype != DType::bf16)
    throw InvalidArgument("KernelSpec.q_dtype", "fp16 or bf16 for the prefill kernel", dtype_name(k.q_dtype));
  if (k.kv_dtype != k.q_dtype && !is_fp8(k.kv_dtype))
    throw InvalidArgument("KernelSpec.kv_dtype", "the query's dtype, or e4m3/e5m2", dtype_name(k.kv_dtype));
  if (k.head_dim <= 0 || k.head_dim % 16 != 0 || k.head_dim > pj::kPrefillMaxHeadDim)
    throw InvalidArgument("KernelSpec.head_dim", fmt::format("a multiple of 16 in [16, {}]", pj::kPrefillMaxHeadDim),
                          std::to_string(k.head_dim));
  if (k.v_dims != k.head_dim)
    throw InvalidArgument("KernelSpec.v_dims", "head_dim for the prefill kernel", std::to_string(k.v_dims));
  if (k.warps < 1 || k.warps > 8) throw InvalidArgument("KernelSpec.warps", "1..8", std::to_string(k.warps));
  if (k.tile_tokens < 16 || k.tile_tokens > 256 || k.tile_tokens % 16 != 0)
    throw InvalidArgument("KernelSpec.tile_tokens", "a multiple of 16 in [16, 256]", std::to_string(k.tile_tokens));
  if (k.stages < 2 || k.stages > 8) throw InvalidArgument("KernelSpec.stages", "2..8", std::to_string(k.stages));
  if (k.compute != Compute::mma) throw InvalidArgument("KernelSpec.compute", "mma for the prefill kernel", "simt");
  if (k.merge != Merge::none || k.schedule != Schedule::host)
    throw InvalidArgument("KernelSpec.merge", "none with the host schedule for the prefill kernel",
                          fmt::format("{}, {}", merge_name(k.merge), schedule_name(k.schedule)));
}

}  // namespace

void KernelSpec::check() const {
  if (kind != KernelKind::decode && any_fixed(*this))
    throw InvalidArgument("KernelSpec.page_shift", "unset page shift, group and splits for all but the decode kernel",
                          fixed_values(*this));
  if (kind == KernelKind::prefill) {
    tag(out_dtype);
    if (is_fp8(out_dtype)) throw InvalidArgument("KernelSpec.out_dtype", "fp32, fp16 or bf16", dtype_name(out_dtype));
    return check_prefill(*this);
  }
  if (kind == KernelKind::merge) {
    tag(out_dtype);
    tag(q_dtype);
    if (is_fp8(out_dtype) || is_fp8(q_dtype))
      throw InvalidArgument("KernelSpec.q_dtype", "fp32, fp16 or bf16 partial results", dtype_name(q_dtype));
    return;
  }
  if (kind == KernelKind::append) {
    tag(q_dtype);
    tag(kv_dtype);
    if (is_fp8(q_dtype))
      throw InvalidArgument("KernelSpec.q_dtype", "fp32, fp16 or bf16 new keys and values", dtype_name(q_dtype));
    if (!is_fp8(kv_dtype) && kv_dtype != q_dtype)
      throw InvalidArgument("KernelSpec.kv_dtype", "the new keys' dtype, e4m3 or e5m2", dtype_name(kv_dtype));
    return;
  }
  if (head_dim <= 0 || head_dim % 16 != 0 || head_dim > pj::kMaxHeadDim)
    throw InvalidArgument("KernelSpec.head_dim", fmt::format("a multiple of 16 in [16, {}]", pj::kMaxHeadDim),
                          std::to_string(head_dim));
  tag(out_dtype);
  tag(kv_dtype);
  tag(q_dtype);
  if (is_fp8(out_dtype) || is_fp8(q_dtype))
    throw InvalidArgument("KernelSpec.q_dtype", "fp32, fp16 or bf16 for the query and output", dtype_name(q_dtype));
  if (is_fp8(kv_dtype) ? q_dtype == DType::f32 : kv_dtype != q_dtype)
    throw InvalidArgument("KernelSpec.kv_dtype", "the query's dtype, or e4m3/e5m2 with an fp16/bf16 query",
                          dtype_name(kv_dtype));
  if (v_dims <= 0 || v_dims % 16 != 0 || v_dims > head_dim)
    throw InvalidArgument("KernelSpec.v_dims", "a multiple of 16 in [16, head_dim]", std::to_string(v_dims));
  if (warps < 1 || warps > 8) throw InvalidArgument("KernelSpec.warps", "1..8", std::to_string(warps));
  if (!pj::tile_shape_ok(tile_tokens, warps))
    throw InvalidArgument("KernelSpec.tile_tokens", tile_shape_rule(warps), std::to_string(tile_tokens));
  if (stages < 2 || stages > 8) throw InvalidArgument("KernelSpec.stages", "2..8", std::to_string(stages));
  if (compute == Compute::mma && kv_dtype == DType::f32)
    throw InvalidArgument("KernelSpec.compute", "simt for fp32 (tensor cores have no fp32-exact mode)", "mma");
  if (compute == Compute::simt && is_fp8(kv_dtype))
    throw InvalidArgument("KernelSpec.compute", "mma for fp8 caches", "simt");
  if (!pj::dim_split_ok(tile_tokens, warps, v_dims, compute == Compute::mma))
    throw InvalidArgument("KernelSpec.warps", dim_split_rule(tile_tokens, warps),
                          fmt::format("{} warps, v_dims {}, {}", warps, v_dims, compute_name(compute)));
  if (merge != Merge::none && merge != Merge::global && merge != Merge::cluster)
    throw InvalidArgument("KernelSpec.merge", "none, global or cluster", std::to_string(int(merge)));
  if (merge == Merge::cluster && !arch_has_clusters(arch))
    throw InvalidArgument("KernelSpec.merge", "cluster merging only on sm_90 or newer", arch);
  if (schedule != Schedule::host && schedule != Schedule::device)
    throw InvalidArgument("KernelSpec.schedule", "host or device", std::to_string(int(schedule)));
  if (schedule == Schedule::device && merge != Merge::global)
    throw InvalidArgument("KernelSpec.merge", "global with the device schedule (its partitions merge in the workspace)",
                          merge_name(merge));
  check_fixed(*this);
}

std::string KernelSpec::name_expression() const {
  if (kind == KernelKind::merge) return fmt::format("pj::merge_states<{}, {}>", tag(q_dtype), tag(out_dtype));
  if (kind == KernelKind::append) return fmt::format("pj::append_kv<{}, {}>", tag(q_dtype), tag(kv_dtype));
  if (kind == KernelKind::prefill)
    return fmt::format("pj::paged_prefill<{}, {}, {}, {}, {}, {}, {}, {}>", tag(q_dtype), tag(kv_dtype), tag(out_dtype),
                       head_dim, pj::kPrefillWarpRows * warps, tile_tokens, warps, stages);
  return fmt::format(
      "pj::paged_decode<{}, {}, {}, {}, {}, {}, {}, {}, {}, pj::Merge::{}, pj::Schedule::{}, {}, {}, {}>", tag(q_dtype),
      tag(kv_dtype), tag(out_dtype), head_dim, v_dims, tile_tokens, warps, stages,
      compute == Compute::mma ? "true" : "false", merge_name(merge), schedule_name(schedule), page_shift, group,
      splits);
}

std::vector<std::string> KernelSpec::compile_options() const {
  return {"--gpu-architecture=" + arch, "-std=c++17", "--device-as-default-execution-space", "-DNDEBUG"};
}

std::string KernelSpec::key(const std::string& source_hash, const std::string& nvrtc_version) const {
  return fmt::format("pagedjit-cache-v{}|pagedjit={}|{}|arch={}|options={}|sources={}|nvrtc={}", kCacheFormatVersion,
                     kVersion, name_expression(), arch, fmt::join(compile_options(), " "), source_hash, nvrtc_version);
}

std::string KernelSpec::readable() const {
  if (kind == KernelKind::merge)
    return fmt::format("merge {}->{} {}", dtype_name(q_dtype), dtype_name(out_dtype), arch);
  if (kind == KernelKind::append)
    return fmt::format("append {}->{} {}", dtype_name(q_dtype), dtype_name(kv_dtype), arch);
  const std::string kv = kv_dtype == q_dtype ? "" : fmt::format("/kv {}", dtype_name(kv_dtype));
  if (kind == KernelKind::prefill)
    return fmt::format("prefill {}{}->{} d{} rows{} keys{} w{} s{} {}", dtype_name(q_dtype), kv, dtype_name(out_dtype),
                       head_dim, pj::kPrefillWarpRows * warps, tile_tokens, warps, stages, arch);
  return fmt::format("decode {}{}->{} d{}/{} tile{} w{} s{} {} merge-{}{}{} {}", dtype_name(q_dtype), kv,
                     dtype_name(out_dtype), head_dim, v_dims, tile_tokens, warps, stages, compute_name(compute),
                     merge_name(merge), schedule == Schedule::device ? " device-schedule" : "", fixed_values(*this),
                     arch);
}

}  // namespace pagedjit::jit
