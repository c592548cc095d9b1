// One host thread per shard, each bound to its shard's device (cudaSetDevice:
// the device's primary context, the one a pagedjit::Engine binds). run() hands
// every thread the same job and returns when all have finished it, so a step
// issues each shard's work from its own thread, concurrently.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pjtp {

class DevicePool {
 public:
  // Thread i drives device devices[i] (several threads may share a device).
  explicit DevicePool(std::vector<int> devices);
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  int size() const { return int(devices_.size()); }
  int device(int i) const { return devices_[std::size_t(i)]; }

  // Runs job(i) on thread i for every i; returns when all are done. The first
  // exception a job threw is rethrown here (after all have finished).
  void run(const std::function<void(int)>& job);

 private:
  void loop(int i);
  void shutdown();

  std::vector<int> devices_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

}  // namespace pjtp
