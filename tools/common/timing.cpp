#include "timing.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>

#include "pagedjit/driver.hpp"

namespace pjbench {

Stats summarize(std::vector<double> v) {
  Stats s;
  s.n = int(v.size());
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::size_t(std::lround(q * double(v.size() - 1)))]; };
  s.min = v.front();
  s.max = v.back();
  s.p10 = at(0.1);
  s.p90 = at(0.9);
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

double host_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

EventPairs::EventPairs(int n) : events_(std::size_t(2 * n), nullptr) {
  const pagedjit::DriverApi& d = pagedjit::driver();
  for (CUevent& e : events_) pagedjit::check(d.cuEventCreate(&e, CU_EVENT_DEFAULT), "cuEventCreate");
}

EventPairs::~EventPairs() {
  const pagedjit::DriverApi& d = pagedjit::driver();
  for (CUevent e : events_)
    if (e) d.cuEventDestroy(e);
}

void EventPairs::begin(int i, CUstream stream) {
  pagedjit::check(pagedjit::driver().cuEventRecord(events_[std::size_t(2 * i)], stream), "cuEventRecord");
}

void EventPairs::end(int i, CUstream stream) {
  pagedjit::check(pagedjit::driver().cuEventRecord(events_[std::size_t(2 * i + 1)], stream), "cuEventRecord");
}

std::vector<double> EventPairs::elapsed_ms() const {
  const pagedjit::DriverApi& d = pagedjit::driver();
  std::vector<double> out;
  if (events_.empty()) return out;
  pagedjit::check(d.cuEventSynchronize(events_.back()), "cuEventSynchronize");
  for (std::size_t i = 0; i + 1 < events_.size(); i += 2) {
    float ms = 0;
    pagedjit::check(d.cuEventElapsedTime(&ms, events_[i], events_[i + 1]), "cuEventElapsedTime");
    out.push_back(double(ms));
  }
  return out;
}

std::vector<double> time_calls(CUstream stream, int warmup, int reps, const std::function<void(int)>& call,
                               const std::function<void(int)>& between) {
  for (int i = 0; i < warmup; ++i) {
    if (between) between(i);
    call(i);
  }
  pagedjit::check(pagedjit::driver().cuStreamSynchronize(stream), "cuStreamSynchronize");
  EventPairs ev(reps);
  for (int i = 0; i < reps; ++i) {
    if (between) between(i);
    ev.begin(i, stream);
    call(i);
    ev.end(i, stream);
  }
  return ev.elapsed_ms();
}

Stats host_cost_us(int batches, int per_batch, const std::function<void()>& call, const std::function<void()>& sync) {
  std::vector<double> per_call;
  for (int b = 0; b < batches; ++b) {
    sync();
    const double t0 = host_seconds();
    for (int i = 0; i < per_batch; ++i) call();
    const double t1 = host_seconds();
    per_call.push_back((t1 - t0) * 1e6 / per_batch);
  }
  sync();
  return summarize(per_call);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace pjbench
