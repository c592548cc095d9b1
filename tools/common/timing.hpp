// Timing primitives: CUDA-event pairs (GPU time, stream order) and the host
// clock (what a call costs the calling thread).
#pragma once
#include <cuda.h>

#include <functional>
#include <string>
#include <vector>

namespace pjbench {

struct Stats {
  double median = 0, min = 0, max = 0, p10 = 0, p90 = 0;
  int n = 0;
};
Stats summarize(std::vector<double> values);

// Seconds on the host's steady clock.
double host_seconds();

// `n` pairs of events, recorded into a stream and read after a single
// synchronization, so reading them adds no gaps between timed calls.
class EventPairs {
 public:
  explicit EventPairs(int n);
  ~EventPairs();
  EventPairs(const EventPairs&) = delete;
  EventPairs& operator=(const EventPairs&) = delete;
  void begin(int i, CUstream stream);
  void end(int i, CUstream stream);
  // Waits for the last end event; milliseconds of each pair.
  std::vector<double> elapsed_ms() const;

 private:
  std::vector<CUevent> events_;
};

// Runs `call(i)` `warmup` times untimed, then `reps` times, each between a
// pair of events. `between(i)`, when given, runs before each timed call,
// outside its events (an L2 flush). Returns the milliseconds of each timed call.
std::vector<double> time_calls(CUstream stream, int warmup, int reps, const std::function<void(int)>& call,
                               const std::function<void(int)>& between = {});

// Host cost per call of `call()`: `batches` batches of `per_batch`
// back-to-back calls on the host clock, `sync()` after each batch (outside
// the clock) so the launch queue never fills. Microseconds per call.
Stats host_cost_us(int batches, int per_batch, const std::function<void()>& call, const std::function<void()>& sync);

// The current UTC time, "2026-11-26T13:05:00Z" (report and profile headers).
std::string utc_now();

}  // namespace pjbench
