// Balanced k-way number partitioning: the Karmarkar-Karp largest differencing method (LDM), its
// balanced variant (BLDM: every part gets the same number of items), greedy LPT, and the better
// of KK and LPT. KK wins by orders of magnitude on large batches, but with equal part sizes on
// small ones (128 items into 16 parts) LPT is often ~3x better, so both run and the better wins.
//
// A "state" is a partial solution: k parts, kept sorted by ascending sum. The two states with the
// largest spread (max - min part sum) are combined first: the heaviest part of one state joins
// the lightest of the other, so their differences cancel. Ties are broken by state creation
// order, and parts are re-sorted with a stable sort, so the result is identical to the Python
// fallback in roll/ops/partition.py for the same input (LPT and the choice likewise).
//
// Parts hold their items as linked lists threaded through one `next` array, so joining two parts
// is O(1) and the whole run allocates only a few flat arrays.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <queue>
#include <utility>

#include "ops.h"

namespace roll {
namespace {

constexpr int64_t kNone = -1;

struct Part {
  double sum = 0.0;
  int64_t head = kNone;  // first item, or kNone when empty
  int64_t tail = kNone;
};

struct HeapEntry {
  double spread;
  int64_t id;    // creation order, the tie-breaker
  int64_t slot;  // where the state's k parts live in the pool
};

// priority_queue pops the "largest": the largest spread, then the oldest state.
struct LowerPriority {
  bool operator()(const HeapEntry& a, const HeapEntry& b) const {
    if (a.spread != b.spread) return a.spread < b.spread;
    return a.id > b.id;
  }
};

// Item indices by ascending workload, ties by index (the order Python's stable `sorted` gives).
// A stable LSD radix sort over the bit patterns, which order like the values for non-negative
// doubles (the wrapper rejects negative and non-finite workloads). It avoids std::sort's
// unpredictable branches; sorting is the largest single cost of the balanced case.
std::vector<int64_t> sort_by_workload(const double* workloads, int64_t n) {
  constexpr int kDigitBits = 11;
  constexpr int kPasses = (64 + kDigitBits - 1) / kDigitBits;
  constexpr uint64_t kDigitMask = (1u << kDigitBits) - 1;
  std::vector<std::pair<uint64_t, int64_t>> keyed(n), scratch(n);
  // One read of the data fills the histograms of every digit.
  std::vector<int64_t> starts(kPasses * (kDigitMask + 2), 0);
  for (int64_t i = 0; i < n; ++i) {
    const double value = workloads[i] + 0.0;  // -0.0 becomes +0.0
    std::memcpy(&keyed[i].first, &value, sizeof(double));
    keyed[i].second = i;
    for (int pass = 0; pass < kPasses; ++pass) {
      ++starts[pass * (kDigitMask + 2) + ((keyed[i].first >> (pass * kDigitBits)) & kDigitMask) + 1];
    }
  }
  for (int pass = 0; pass < kPasses; ++pass) {
    const auto first = starts.begin() + pass * (kDigitMask + 2);
    const auto last = first + kDigitMask + 2;
    if (*std::max_element(first, last) == n) continue;  // every key has the same digit: no-op
    std::partial_sum(first, last, first);
    const int shift = pass * kDigitBits;
    for (const auto& entry : keyed) scratch[first[(entry.first >> shift) & kDigitMask]++] = entry;
    keyed.swap(scratch);
  }
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = keyed[i].second;
  return order;
}

// Stable sort of a state's parts by sum. Insertion sort for the usual few parts (no allocation,
// and it dominates the merge cost otherwise); std::stable_sort keeps many parts O(k log k).
void sort_by_sum(std::vector<Part>& parts) {
  constexpr size_t kInsertionSortMax = 32;
  if (parts.size() > kInsertionSortMax) {
    std::stable_sort(parts.begin(), parts.end(),
                     [](const Part& x, const Part& y) { return x.sum < y.sum; });
    return;
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const Part part = parts[i];
    size_t j = i;
    for (; j > 0 && parts[j - 1].sum > part.sum; --j) parts[j] = parts[j - 1];
    parts[j] = part;
  }
}

class Partitioner {
 public:
  Partitioner(int64_t n, int64_t k, int64_t num_states)
      : k_(k), next_(n, kNone), pool_(num_states * k) {}

  Part* state(int64_t slot) { return pool_.data() + slot * k_; }

  void add_item(Part& part, int64_t item, double workload) {
    part.sum = workload;
    part.head = part.tail = item;
  }

  void push(int64_t slot) {
    const Part* parts = state(slot);
    heap_.push({parts[k_ - 1].sum - parts[0].sum, next_id_++, slot});
  }

  // Merges the two widest states until one is left; returns its slot.
  int64_t run() {
    std::vector<Part> merged(k_);
    while (heap_.size() > 1) {
      const int64_t heavy = heap_.top().slot;
      heap_.pop();
      const int64_t light = heap_.top().slot;
      heap_.pop();
      const Part* a = state(heavy);
      const Part* b = state(light);
      for (int64_t i = 0; i < k_; ++i) merged[i] = join(a[k_ - 1 - i], b[i]);
      sort_by_sum(merged);
      std::copy(merged.begin(), merged.end(), state(heavy));  // reuse the heavy state's slot
      push(heavy);
    }
    return heap_.top().slot;
  }

  // Marks every item of `part` as belonging to part number `label`.
  void label_items(const Part& part, int64_t label, int64_t* assignment) const {
    for (int64_t item = part.head; item != kNone; item = next_[item]) assignment[item] = label;
  }

 private:
  Part join(const Part& a, const Part& b) {
    Part out;
    out.sum = a.sum + b.sum;
    if (a.head == kNone) {
      out.head = b.head;
      out.tail = b.tail;
    } else {
      out.head = a.head;
      out.tail = a.tail;
      if (b.head != kNone) {
        next_[a.tail] = b.head;
        out.tail = b.tail;
      }
    }
    return out;
  }

  int64_t k_;
  int64_t next_id_ = 0;
  std::vector<int64_t> next_;
  std::vector<Part> pool_;
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, LowerPriority> heap_;
};

// Karmarkar-Karp over items already sorted by ascending workload.
std::vector<int64_t> karmarkar_karp(const double* workloads, int64_t n, int64_t k, bool equal_size,
                                    const std::vector<int64_t>& order) {
  std::vector<int64_t> assignment(n);
  const int64_t num_states = equal_size ? n / k : n;
  Partitioner partitioner(n, k, num_states);
  for (int64_t slot = 0; slot < num_states; ++slot) {
    Part* parts = partitioner.state(slot);
    if (equal_size) {
      // Each group of k consecutive (sorted) items starts as one state, one item per part.
      for (int64_t j = 0; j < k; ++j) {
        const int64_t item = order[slot * k + j];
        partitioner.add_item(parts[j], item, workloads[item]);
      }
    } else {
      const int64_t item = order[slot];
      partitioner.add_item(parts[k - 1], item, workloads[item]);
    }
    partitioner.push(slot);
  }

  const Part* final_parts = partitioner.state(partitioner.run());
  for (int64_t j = 0; j < k; ++j) partitioner.label_items(final_parts[j], j, assignment.data());
  return assignment;
}

// Greedy LPT: items by descending workload (ties: ascending index), each onto the part with the
// smallest sum (ties: lowest part number) among those with room. A min-heap of parts keeps it
// O(n log k); placing an item changes only the top's key, so one sift-down replaces pop + push.
// Parts are then renumbered by ascending sum (ties: part number).
std::vector<int64_t> greedy_lpt(const double* workloads, int64_t n, int64_t k, bool equal_size,
                                const std::vector<int64_t>& order) {
  const int64_t capacity = equal_size ? n / k : n;
  std::vector<int64_t> assignment(n);
  std::vector<double> sums(k, 0.0);
  std::vector<int64_t> counts(k, 0);
  std::vector<int64_t> heap(k);  // part numbers; all sums are 0, so ascending part is a heap
  std::iota(heap.begin(), heap.end(), 0);
  int64_t heap_size = k;
  const auto lighter = [&](int64_t x, int64_t y) {
    return sums[x] < sums[y] || (sums[x] == sums[y] && x < y);
  };
  const auto sift_down_top = [&]() {
    const int64_t part = heap[0];
    int64_t hole = 0;
    for (int64_t child = 1; child < heap_size; child = 2 * hole + 1) {
      if (child + 1 < heap_size && lighter(heap[child + 1], heap[child])) ++child;
      if (!lighter(heap[child], part)) break;
      heap[hole] = heap[child];
      hole = child;
    }
    heap[hole] = part;
  };
  // `order` is ascending with ties by index: walk it backwards one run of equal workloads at a
  // time, each run forwards.
  for (int64_t run_end = n; run_end > 0;) {
    int64_t run_start = run_end - 1;
    const double run_workload = workloads[order[run_end - 1]];
    while (run_start > 0 && workloads[order[run_start - 1]] == run_workload) --run_start;
    for (int64_t i = run_start; i < run_end; ++i) {
      const int64_t item = order[i];
      const int64_t part = heap[0];
      assignment[item] = part;
      sums[part] += workloads[item];
      if (++counts[part] == capacity) heap[0] = heap[--heap_size];  // full: drop it
      sift_down_top();
    }
    run_end = run_start;
  }
  std::vector<int64_t> by_sum(k);
  std::iota(by_sum.begin(), by_sum.end(), 0);
  std::stable_sort(by_sum.begin(), by_sum.end(),
                   [&](int64_t x, int64_t y) { return sums[x] < sums[y]; });
  std::vector<int64_t> rank(k);
  for (int64_t r = 0; r < k; ++r) rank[by_sum[r]] = r;
  for (int64_t& part : assignment) part = rank[part];
  return assignment;
}

// (largest part sum, largest - smallest), each part summed in ascending item order as the Python
// fallback does, so both pick the same winner.
std::pair<double, double> max_and_spread(const double* workloads, int64_t k,
                                         const std::vector<int64_t>& assignment) {
  std::vector<double> sums(k, 0.0);
  for (size_t item = 0; item < assignment.size(); ++item) sums[assignment[item]] += workloads[item];
  const auto [lowest, highest] = std::minmax_element(sums.begin(), sums.end());
  return {*highest, *highest - *lowest};
}

}  // namespace

std::vector<int64_t> balanced_partition(const double* workloads, int64_t n, int64_t k,
                                        bool equal_size) {
  if (n == 0) return {};
  const std::vector<int64_t> order = sort_by_workload(workloads, n);
  std::vector<int64_t> kk = karmarkar_karp(workloads, n, k, equal_size, order);
  std::vector<int64_t> lpt = greedy_lpt(workloads, n, k, equal_size, order);
  // KK on ties: LPT must be strictly better.
  return max_and_spread(workloads, k, lpt) < max_and_spread(workloads, k, kk) ? lpt : kk;
}

}  // namespace roll
