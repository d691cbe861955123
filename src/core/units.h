// Named unit types for the planning stack: a quantity carries its unit in its type, so an
// SM count cannot be added to a time and a byte count cannot be passed where FLOPs belong.
//
//   TimeUs t = TimeUs(12.5) + TimeUs(3.0);   // 15.5 us
//   SmCount q = SmCount(8) * 3;              // 24 SMs
//   double ratio = t / TimeUs(5.0);          // 3.1 (same unit divides to a plain number)
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>

namespace mosaic {

// A value of representation `Rep` tagged with a unit `Tag`. Only operations that keep the unit
// meaningful are defined: sums and differences of the same unit, scaling by a plain number,
// and the ratio of two quantities of the same unit.
template <typename Tag, typename Rep>
class Quantity {
 public:
  using rep = Rep;
  constexpr Quantity() = default;
  constexpr explicit Quantity(Rep v) : v_(v) {}
  constexpr Rep value() const { return v_; }

  constexpr Quantity operator+(Quantity o) const { return Quantity(v_ + o.v_); }
  constexpr Quantity operator-(Quantity o) const { return Quantity(v_ - o.v_); }
  constexpr Quantity& operator+=(Quantity o) {
    v_ += o.v_;
    return *this;
  }
  constexpr Quantity& operator-=(Quantity o) {
    v_ -= o.v_;
    return *this;
  }
  constexpr Quantity operator*(Rep k) const { return Quantity(v_ * k); }
  constexpr Quantity operator/(Rep k) const { return Quantity(v_ / k); }
  constexpr double operator/(Quantity o) const {
    return static_cast<double>(v_) / static_cast<double>(o.v_);
  }
  constexpr bool operator==(Quantity o) const { return v_ == o.v_; }
  constexpr bool operator!=(Quantity o) const { return v_ != o.v_; }
  constexpr bool operator<(Quantity o) const { return v_ < o.v_; }
  constexpr bool operator<=(Quantity o) const { return v_ <= o.v_; }
  constexpr bool operator>(Quantity o) const { return v_ > o.v_; }
  constexpr bool operator>=(Quantity o) const { return v_ >= o.v_; }

 private:
  Rep v_{};
};

template <typename Tag, typename Rep>
constexpr Quantity<Tag, Rep> operator*(Rep k, Quantity<Tag, Rep> q) {
  return q * k;
}

template <typename Tag, typename Rep>
std::ostream& operator<<(std::ostream& os, Quantity<Tag, Rep> q) {
  return os << q.value();
}

struct SmCountTag {};
struct TimeUsTag {};
struct BytesTag {};
struct FlopsTag {};
struct FlopsPerSecTag {};
struct BytesPerSecTag {};

using SmCount = Quantity<SmCountTag, int>;             // streaming multiprocessors
using TimeUs = Quantity<TimeUsTag, double>;            // microseconds
using Bytes = Quantity<BytesTag, double>;              // bytes (double: sizes reach 1e12+)
using Flops = Quantity<FlopsTag, double>;              // floating-point operations
using FlopsPerSec = Quantity<FlopsPerSecTag, double>;  // throughput
using BytesPerSec = Quantity<BytesPerSecTag, double>;  // bandwidth

// Time to do `work` at `rate`, in microseconds.
constexpr TimeUs TimeFor(Flops work, FlopsPerSec rate) {
  return TimeUs(work.value() / rate.value() * 1e6);
}
constexpr TimeUs TimeFor(Bytes traffic, BytesPerSec rate) {
  return TimeUs(traffic.value() / rate.value() * 1e6);
}

}  // namespace mosaic

template <typename Tag, typename Rep>
struct std::hash<mosaic::Quantity<Tag, Rep>> {
  size_t operator()(mosaic::Quantity<Tag, Rep> q) const { return std::hash<Rep>()(q.value()); }
};
