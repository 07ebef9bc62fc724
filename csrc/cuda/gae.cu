// CUDA GAE reverse scan over (B, T): one thread per row runs the sequential recursion of
// csrc/gae.cpp (see there for the semantics). A block (one warp) owns 32 rows and walks time
// backwards in tiles of 32 steps staged through shared memory, so global loads and stores are
// coalesced along T although each thread scans its own row.
#include "launchers.h"

namespace roll_cuda {
namespace {

constexpr int kRows = 32;  // rows per block = threads per block
constexpr int kTile = 32;  // time steps staged per iteration

__global__ void gae_kernel(const float* __restrict__ rewards, const float* __restrict__ values,
                           const float* __restrict__ mask, float* __restrict__ advantages,
                           float* __restrict__ returns, int64_t B, int64_t T, float gamma,
                           float gamma_lam) {
  // +1 column: lane j then reads row j at bank (j * 33 + t) % 32, conflict free.
  __shared__ float s_reward[kRows][kTile + 1];
  __shared__ float s_value[kRows][kTile + 1];
  __shared__ float s_mask[kRows][kTile + 1];
  __shared__ float s_running[kRows][kTile + 1];

  const int lane = threadIdx.x;
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * kRows;
  const int rows = static_cast<int>(B - first_row < kRows ? B - first_row : kRows);
  float next_value = 0.0f;
  float running = 0.0f;

  for (int64_t tile_end = T; tile_end > 0; tile_end -= kTile) {
    const int64_t tile_start = tile_end > kTile ? tile_end - kTile : 0;
    const int width = static_cast<int>(tile_end - tile_start);

    // Coalesced load: lane = time step, loop over the block's rows.
    if (lane < width) {
      for (int r = 0; r < rows; ++r) {
        const int64_t i = (first_row + r) * T + tile_start + lane;
        s_reward[r][lane] = rewards[i];
        s_value[r][lane] = values[i];
        s_mask[r][lane] = mask[i];
      }
    }
    __syncthreads();

    // Sequential scan: lane = row.
    if (lane < rows) {
      for (int j = width - 1; j >= 0; --j) {
        const float v = s_value[lane][j];
        if (s_mask[lane][j] > 0.0f) {
          const float delta = s_reward[lane][j] + gamma * next_value - v;
          running = delta + gamma_lam * running;
          next_value = v;
        }
        s_running[lane][j] = running;
      }
    }
    __syncthreads();

    // Coalesced store, zero outside the mask.
    if (lane < width) {
      for (int r = 0; r < rows; ++r) {
        const int64_t i = (first_row + r) * T + tile_start + lane;
        const float m = s_mask[r][lane];
        advantages[i] = s_running[r][lane] * m;
        returns[i] = (s_running[r][lane] + s_value[r][lane]) * m;
      }
    }
    // The next tile overwrites the shared arrays.
    __syncthreads();
  }
}

}  // namespace

void launch_gae(const float* rewards, const float* values, const float* mask, float* advantages,
                float* returns, int64_t B, int64_t T, double gamma, double lam, cudaStream_t stream) {
  if (B == 0 || T == 0) return;
  const unsigned int blocks = static_cast<unsigned int>((B + kRows - 1) / kRows);
  // Same float32 constants as the CPU scan and the torch loop.
  gae_kernel<<<blocks, kRows, 0, stream>>>(rewards, values, mask, advantages, returns, B, T,
                                           static_cast<float>(gamma),
                                           static_cast<float>(gamma * lam));
}

}  // namespace roll_cuda
