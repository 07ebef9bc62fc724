// Generalized advantage estimation as a reverse scan over each row of (B, T) arrays.
//
// Going backwards in time with next_value = 0 and running = 0 past the last token, at every
// unmasked token (m[t] > 0):
//   running    = r[t] + gamma * next_value - v[t] + gamma * lam * running
//   next_value = v[t]
// while masked tokens (m = 0, e.g. env tokens between turns) pass both through unchanged: this is
// the GAE over the unmasked tokens of each row. Outputs are advantages[t] = running * m[t] and
// returns[t] = (running + v[t]) * m[t], so 0 outside the mask, exactly like
// roll.algorithms.advantages.compute_gae_advantage_return. Rows are independent, so the batch is
// split across threads.
#include <algorithm>
#include <thread>

#include "ops.h"

namespace roll {

void gae_rows(const float* rewards, const float* values, const float* mask, float* advantages,
              float* returns, int64_t row_begin, int64_t row_end, int64_t T, float gamma,
              float gamma_lam) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t base = row * T;
    float next_value = 0.0f;
    float running = 0.0f;
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t i = base + t;
      const float m = mask[i];
      if (m > 0.0f) {
        const float delta = rewards[i] + gamma * next_value - values[i];
        running = delta + gamma_lam * running;
        next_value = values[i];
      }
      advantages[i] = running * m;
      returns[i] = (running + values[i]) * m;
    }
  }
}

void gae(const float* rewards, const float* values, const float* mask, float* advantages,
         float* returns, int64_t B, int64_t T, double gamma, double lam, int64_t max_threads) {
  // Same float32 constants as the torch loop: gamma and (gamma * lam) rounded once.
  const float gamma_f = static_cast<float>(gamma);
  const float gamma_lam = static_cast<float>(gamma * lam);
  // Below ~64k elements a thread costs more to start than it saves.
  constexpr int64_t kMinElementsPerThread = 1 << 16;
  int64_t threads = max_threads > 0 ? max_threads : (int64_t)std::thread::hardware_concurrency();
  threads = std::max<int64_t>(1, std::min({threads, B, (B * T) / kMinElementsPerThread}));
  if (threads == 1) {
    gae_rows(rewards, values, mask, advantages, returns, 0, B, T, gamma_f, gamma_lam);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t rows_per_thread = (B + threads - 1) / threads;
  for (int64_t begin = 0; begin < B; begin += rows_per_thread) {
    const int64_t end = std::min(B, begin + rows_per_thread);
    pool.emplace_back(gae_rows, rewards, values, mask, advantages, returns, begin, end, T, gamma_f,
                      gamma_lam);
  }
  for (auto& thread : pool) thread.join();
}

}  // namespace roll
