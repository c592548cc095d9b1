#include "device_pool.hpp"

#include <chrono>

#include "check.hpp"

namespace pjtp {
namespace {

// Waiting spins this long before sleeping: a step's hand-offs stay in the
// microseconds while the threads are busy, and idle threads cost nothing.
constexpr auto kSpin = std::chrono::microseconds(200);

}  // namespace

DevicePool::DevicePool(std::vector<int> devices) : devices_(std::move(devices)) {
  try {
    for (int i = 0; i < size(); ++i) threads_.emplace_back([this, i] { loop(i); });
    run([this](int i) { TP_CUDA(cudaSetDevice(devices_[std::size_t(i)])); });
  } catch (...) {
    shutdown();
    throw;
  }
}

DevicePool::~DevicePool() {
  shutdown();
}

void DevicePool::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void DevicePool::run(const std::function<void(int)>& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &job;
    error_ = nullptr;
    pending_.store(size(), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  const auto until = std::chrono::steady_clock::now() + kSpin;
  while (pending_.load(std::memory_order_acquire) != 0 && std::chrono::steady_clock::now() < until) {
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void DevicePool::loop(int i) {
  std::uint64_t seen = 0;
  for (;;) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
    }
    const std::function<void(int)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stop_) return;
      seen = generation_.load(std::memory_order_acquire);
      job = job_;
    }
    try {
      (*job)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_all();
    }
  }
}

}  // namespace pjtp
