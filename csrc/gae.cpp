// Generalized advantage estimation as a reverse scan over each row of (B, T) arrays.
//
// Going backwards in time with next_value = 0 and running = 0 past the last token:
//   delta     = r[t] + gamma * next_value - v[t]
//   candidate = delta + gamma * lam * running
//   next_value = m[t] * v[t]      + (1 - m[t]) * next_value
//   running    = m[t] * candidate + (1 - m[t]) * running
//   advantages[t] = running,  returns[t] = running + v[t]
// so masked tokens (m = 0, e.g. env tokens between turns) pass the recursion through unchanged,
// i.e. this is the GAE over the unmasked tokens of each row. Rows are independent, so the batch
// is split across threads.
#include <algorithm>
#include <thread>

#include "ops.h"

namespace roll {

void gae_rows(const float* rewards, const float* values, const float* mask, float* advantages,
              float* returns, int64_t row_begin, int64_t row_end, int64_t T, float gamma, float lam) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t base = row * T;
    float next_value = 0.0f;
    float running = 0.0f;
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t i = base + t;
      const float m = mask[i];
      const float delta = rewards[i] + gamma * next_value - values[i];
      const float candidate = delta + gamma * lam * running;
      next_value = m * values[i] + (1.0f - m) * next_value;
      running = m * candidate + (1.0f - m) * running;
      advantages[i] = running;
      returns[i] = running + values[i];
    }
  }
}

void gae(const float* rewards, const float* values, const float* mask, float* advantages,
         float* returns, int64_t B, int64_t T, float gamma, float lam, int64_t max_threads) {
  // Below ~64k elements a thread costs more to start than it saves.
  constexpr int64_t kMinElementsPerThread = 1 << 16;
  int64_t threads = max_threads > 0 ? max_threads : (int64_t)std::thread::hardware_concurrency();
  threads = std::max<int64_t>(1, std::min({threads, B, (B * T) / kMinElementsPerThread}));
  if (threads == 1) {
    gae_rows(rewards, values, mask, advantages, returns, 0, B, T, gamma, lam);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t rows_per_thread = (B + threads - 1) / threads;
  for (int64_t begin = 0; begin < B; begin += rows_per_thread) {
    const int64_t end = std::min(B, begin + rows_per_thread);
    pool.emplace_back(gae_rows, rewards, values, mask, advantages, returns, begin, end, T, gamma, lam);
  }
  for (auto& thread : pool) thread.join();
}

}  // namespace roll
