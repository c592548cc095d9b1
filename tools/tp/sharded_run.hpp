// A paged-attention problem split by heads over shards (tensor parallelism,
// see shard.hpp), each shard on its device with its own pagedjit::Engine,
// driven from its own host thread on its own stream; and the gather of the
// shards' head-major output slices: an in-place ncclAllGather (every device
// ends with the whole output), or one cudaMemcpyPeerAsync per shard into
// shard 0's buffer (shard 0's device ends with it).
#pragma once
#include <cuda.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "device_pool.hpp"
#include "pagedjit/engine.hpp"
#include "pagedjit/testing.hpp"

namespace pjtp {

enum class Gather {
  none,    // no gather (the unsharded run)
  nccl,    // in-place ncclAllGather, one communicator per device
  copies,  // cudaMemcpyPeerAsync of each shard's slice into shard 0's buffer
};
const char* gather_name(Gather g);

bool nccl_built();           // pagedjit-tp was built with NCCL
std::string nccl_version();  // the loaded library's version ("" without NCCL)

struct StepTimes {
  double host_ms = 0;       // host clock: from handing the shards their work until every stream is done
  double event_ms = 0;      // CUDA events, per device from its first launch to its gather done; the longest
  double attention_ms = 0;  // CUDA events: the longest shard's attention kernel(s)
};

class ShardedRun {
 public:
  // Shard s runs on devices[s] (check_shardable's conditions apply).
  // Gather::nccl needs distinct devices.
  ShardedRun(const pagedjit::testing::HostProblem& host, std::vector<int> devices, Gather gather);
  ~ShardedRun();
  ShardedRun(const ShardedRun&) = delete;
  ShardedRun& operator=(const ShardedRun&) = delete;

  int shards() const { return int(devices_.size()); }
  Gather gather() const { return gather_; }
  bool peer_access() const { return peer_access_; }  // copies between distinct devices go peer to peer

  // One step: each shard's attention, issued from its thread, then the
  // gather. Returns once every stream has finished.
  StepTimes step(const pagedjit::PagedAttentionOptions& options);
  // NaN in every output buffer, so an element left unwritten shows up.
  void poison();
  // Shard s's full output buffer: [num_heads, num_seqs, head_dim] of the
  // output dtype (the whole output on the shards holders() names).
  std::vector<std::uint8_t> gathered(int shard) const;
  // The shards whose buffer holds the whole output after a step.
  std::vector<int> holders() const;
  // Shard 0's plan for these options.
  pagedjit::LaunchInfo plan(const pagedjit::PagedAttentionOptions& options) const;

 private:
  struct Shard;
  std::vector<int> devices_;
  Gather gather_;
  bool peer_access_ = false;
  std::size_t out_bytes_ = 0, slice_bytes_ = 0;  // the whole output; one shard's part of it
  std::unique_ptr<DevicePool> pool_;
  std::vector<std::unique_ptr<Shard>> shards_;
  struct Comms;
  std::unique_ptr<Comms> comms_;
};

}  // namespace pjtp
