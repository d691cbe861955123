// Measured SM-time utilization (see sm_utilization.h).
#include "sim/sm_utilization.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>

namespace mosaic {

StatusOr<SmUtilization> SmTimeUtilization(const std::vector<KernelSpan>& kernels,
                                          const std::vector<int>& place_sms, int total_sms,
                                          double window_us) {
  if (total_sms <= 0) return InvalidArgument("SM utilization: the GPU has no SMs");
  if (!(window_us > 0)) return InvalidArgument("SM utilization: the window must be positive");
  for (size_t p = 0; p < place_sms.size(); ++p) {
    if (place_sms[p] <= 0 || place_sms[p] > total_sms)
      return InvalidArgument("SM utilization: place " + std::to_string(p) + " has " +
                             std::to_string(place_sms[p]) + " SMs (the GPU has " +
                             std::to_string(total_sms) + ")");
  }
  // Sweep over start (+) and end (-) points; at equal times ends come first.
  std::vector<std::pair<double, int>> points;  // (time, +(k + 1) start or -(k + 1) end)
  points.reserve(2 * kernels.size());
  for (size_t k = 0; k < kernels.size(); ++k) {
    const KernelSpan& s = kernels[k];
    const std::string where = "SM utilization: kernel " + std::to_string(k);
    if (!(s.end_us >= s.start_us)) return InvalidArgument(where + " ends before it starts");
    if (s.blocks <= 0) return InvalidArgument(where + " has no blocks");
    if (s.place < 0 || s.place >= static_cast<int>(place_sms.size()))
      return InvalidArgument(where + " names place " + std::to_string(s.place) + " of " +
                             std::to_string(place_sms.size()));
    points.emplace_back(s.start_us, static_cast<int>(k) + 1);
    points.emplace_back(s.end_us, -(static_cast<int>(k) + 1));
  }
  std::sort(points.begin(), points.end());
  std::vector<int64_t> blocks_at(place_sms.size(), 0);  // running kernels' blocks per place
  SmUtilization u;
  for (size_t i = 0; i < points.size(); ++i) {
    const auto [t, id] = points[i];
    const KernelSpan& s = kernels[std::abs(id) - 1];
    blocks_at[s.place] += id > 0 ? s.blocks : -s.blocks;
    if (i + 1 == points.size()) break;
    const double dt = points[i + 1].first - t;
    if (dt <= 0) continue;
    int64_t busy = 0;
    for (size_t p = 0; p < place_sms.size(); ++p) busy += std::min<int64_t>(blocks_at[p], place_sms[p]);
    u.busy_sm_us += static_cast<double>(std::min<int64_t>(busy, total_sms)) * dt;
  }
  u.utilization = u.busy_sm_us / (static_cast<double>(total_sms) * window_us);
  return u;
}

}  // namespace mosaic
