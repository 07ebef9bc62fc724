// Karmarkar-Karp largest differencing method (LDM) for k-way number partitioning, and its
// balanced variant (BLDM: every part gets the same number of items).
//
// A "state" is a partial solution: k parts, kept sorted by ascending sum. The states with the
// largest spread (max - min part sum) are combined first: the heaviest part of one state joins
// the lightest of the other, so their differences cancel. Ties are broken by state creation
// order, and parts are re-sorted with a stable sort, so the result is identical to the Python
// fallback in roll/ops/partition.py for the same input.
#include <algorithm>
#include <numeric>
#include <queue>
#include <utility>

#include "ops.h"

namespace roll {
namespace {

struct Part {
  double sum = 0.0;
  std::vector<int64_t> items;
};

struct State {
  std::vector<Part> parts;  // ascending by sum
  double spread() const { return parts.back().sum - parts.front().sum; }
};

struct HeapEntry {
  double spread;
  int64_t id;
};

// priority_queue pops the "largest": the largest spread, then the oldest state.
struct LowerPriority {
  bool operator()(const HeapEntry& a, const HeapEntry& b) const {
    if (a.spread != b.spread) return a.spread < b.spread;
    return a.id > b.id;
  }
};

void sort_parts(std::vector<Part>& parts) {
  std::stable_sort(parts.begin(), parts.end(),
                   [](const Part& a, const Part& b) { return a.sum < b.sum; });
}

// Combine heaviest-with-lightest; the bigger index list is moved, the smaller appended, so the
// total copying stays O(n log n).
State merge(State&& heavy, State&& light) {
  const size_t k = heavy.parts.size();
  State merged;
  merged.parts.resize(k);
  for (size_t i = 0; i < k; ++i) {
    Part& a = heavy.parts[k - 1 - i];
    Part& b = light.parts[i];
    Part& out = merged.parts[i];
    out.sum = a.sum + b.sum;
    if (a.items.size() < b.items.size()) std::swap(a.items, b.items);
    out.items = std::move(a.items);
    out.items.insert(out.items.end(), b.items.begin(), b.items.end());
  }
  sort_parts(merged.parts);
  return merged;
}

}  // namespace

Parts karmarkar_karp(const double* workloads, int64_t n, int64_t k, bool equal_size) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return workloads[a] < workloads[b]; });

  std::vector<State> states;
  if (equal_size) {
    // Each group of k consecutive (sorted) items starts as one state with one item per part.
    for (int64_t offset = 0; offset < n; offset += k) {
      State s;
      s.parts.resize(k);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t item = order[offset + j];
        s.parts[j].sum = workloads[item];
        s.parts[j].items.push_back(item);
      }
      states.push_back(std::move(s));
    }
  } else {
    for (int64_t item : order) {
      State s;
      s.parts.resize(k);
      s.parts[k - 1].sum = workloads[item];
      s.parts[k - 1].items.push_back(item);
      states.push_back(std::move(s));
    }
  }
  if (states.empty()) return Parts(k);

  std::priority_queue<HeapEntry, std::vector<HeapEntry>, LowerPriority> heap;
  for (size_t id = 0; id < states.size(); ++id) heap.push({states[id].spread(), (int64_t)id});
  while (heap.size() > 1) {
    const int64_t first = heap.top().id;
    heap.pop();
    const int64_t second = heap.top().id;
    heap.pop();
    states.push_back(merge(std::move(states[first]), std::move(states[second])));
    states[first] = State();
    states[second] = State();
    heap.push({states.back().spread(), (int64_t)states.size() - 1});
  }

  Parts result;
  for (Part& part : states[heap.top().id].parts) {
    std::sort(part.items.begin(), part.items.end());
    result.push_back(std::move(part.items));
  }
  return result;
}

}  // namespace roll
