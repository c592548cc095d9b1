// Fuzz target (a): argument validation and planning, on calls made by
// random_call (call_generator.hpp).
#include <cstdint>
#include <cstring>
#include <string>

#include "attention/planner.hpp"
#include "attention/validate.hpp"
#include "call_generator.hpp"
#include "harness.hpp"
#include "pagedjit/device.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/errors.hpp"
#include "pagedjit/paged_attention.hpp"

namespace pjfuzz {
namespace {

std::string describe(const pagedjit::ProblemShape& s, const pagedjit::PagedAttentionOptions& o) {
  std::string d = "seqs " + std::to_string(s.num_seqs) + " heads " + std::to_string(s.num_heads) + "/" +
                  std::to_string(s.num_kv_heads) + " head_dim " + std::to_string(s.head_dim) + " page " +
                  std::to_string(s.page_size) + " blocks " + std::to_string(s.num_blocks) + " max_blocks " +
                  std::to_string(s.max_blocks) + " dtype " + pagedjit::dtype_name(s.dtype) + " max_context_len " +
                  std::to_string(s.max_context_len) + " num_splits " + std::to_string(o.num_splits);
  if (o.batch_invariant) d += " batch_invariant";
  if (o.pages_per_compute_block) d += " pages_per_compute_block " + std::to_string(*o.pages_per_compute_block);
  if (o.kernel_config)
    d += " kernel_config {" + std::to_string(o.kernel_config->tile_tokens) + ", " +
         std::to_string(o.kernel_config->warps) + ", " + std::to_string(o.kernel_config->stages) + ", " +
         std::to_string(o.kernel_config->chunk_tokens) + ", " + std::to_string(o.kernel_config->v_dims) + "}";
  return d;
}

std::uint64_t g_valid = 0, g_planned = 0;

}  // namespace

std::string validate_stats() {
  return std::to_string(g_valid) + " valid calls, " + std::to_string(g_planned) + " planned";
}

void validate_one(const std::uint8_t* data, std::size_t size) {
  Bytes in(data, size);

  const Call call = random_call(in);
  const pagedjit::PagedAttentionArgs& a = call.args;
  const pagedjit::PagedAttentionOptions& o = call.options;

  pagedjit::ProblemShape shape;
  try {
    shape = pagedjit::validate_call(a, o);
  } catch (const pagedjit::Error&) {
    return;
  }
  const auto check = [&](bool ok, const char* what) {
    if (!ok) throw Violation(std::string("invariant broken: ") + what + " (" + describe(shape, o) + ")");
  };
  check(shape.num_heads >= 1 && shape.num_kv_heads >= 1 && shape.num_heads % shape.num_kv_heads == 0,
        "validated heads");
  check(shape.head_dim >= 16 && shape.head_dim <= 512 && shape.head_dim % 16 == 0, "validated head_dim");
  check(shape.page_size >= 1 && shape.page_size <= 256, "validated page_size");
  check(shape.max_context_len >= 0, "validated max_context_len");

  ++g_valid;
  pagedjit::LaunchInfo plan;
  try {
    plan = pagedjit::plan_problem(shape, o, pagedjit::DeviceInfo::h100_sxm());
  } catch (const pagedjit::Error&) {
    return;
  }
  ++g_planned;
  const auto device = pagedjit::DeviceInfo::h100_sxm();
  // The host schedule: partitions in grid z. The device schedule: work items
  // after the sequences in grid y, for batches of two or more sequences.
  const bool device_schedule = plan.work_items > 0;
  check(device_schedule
            ? plan.num_splits == 0 && shape.num_seqs >= 2 && plan.grid[2] == 1 &&
                  std::int64_t(plan.grid[1]) == std::int64_t(shape.num_seqs) + plan.work_items && plan.grid[1] <= 65535
            : plan.num_splits >= 1 && plan.num_splits <= 65535,
        "num_splits in [1, 65535], or a device schedule's work items in grid y");
  check(plan.tile_tokens > 0 && plan.warps >= 1 && plan.warps <= 8 && plan.stages >= 2, "tile shape");
  check(plan.threads == plan.warps * 32, "threads");
  check(plan.smem_bytes > 0 && plan.smem_bytes <= device.max_smem_per_block, "shared memory within the device's");
  check(plan.head_chunks >= 1 && std::int64_t(plan.heads_per_cta) * plan.head_chunks >= shape.group(),
        "head chunks cover the group");
  check(plan.v_dims >= 16 && std::int64_t(plan.v_dims) * plan.dv_chunks >= shape.head_dim, "v_dims cover head_dim");
  check(plan.workspace_bytes >= 0, "workspace_bytes >= 0");
  // Partitions merge through the workspace, or in a cluster (2..8 of them, one
  // cluster per sequence) through distributed shared memory with none.
  check(plan.cluster == 1 || (plan.cluster == plan.num_splits && plan.cluster <= 8 && plan.workspace_bytes == 0),
        "a cluster holds a sequence's partitions and needs no workspace");
  check(plan.num_splits == 1 || shape.num_seqs == 0 || plan.cluster > 1 || plan.workspace_bytes > 0,
        "split plans merged in global memory need a workspace");
  check(!device_schedule || plan.workspace_bytes > 0, "device-scheduled partials need a workspace");
  check(!plan.decode_kernel.empty(), "a decode kernel");
  // The kernel carries the merge tail the launch needs (pj::Merge): a
  // Merge::none kernel launched with partitions would write partial results
  // as the output.
  const char* merge = device_schedule        ? ", pj::Merge::global, pj::Schedule::device, "
                      : plan.num_splits == 1 ? ", pj::Merge::none, pj::Schedule::host, "
                      : plan.cluster > 1     ? ", pj::Merge::cluster, pj::Schedule::host, "
                                             : ", pj::Merge::global, pj::Schedule::host, ";
  check(plan.decode_kernel.find(merge) != std::string::npos, "the decode kernel's merge mode matches the partitions");
  (void)plan.describe();
}

}  // namespace pjfuzz

PJFUZZ_ENTRY(pjfuzz::validate_one)
PJFUZZ_STATS(fuzz_validate, pjfuzz::validate_stats)
