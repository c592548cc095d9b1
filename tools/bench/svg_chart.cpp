#include "svg_chart.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace pjbench {
namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

struct Series {
  std::string label, color;
  std::vector<std::optional<double>> values;
  std::vector<std::string> missing;  // text drawn where a value is missing
};

constexpr const char* kOurs = "#1f5fbf";
constexpr const char* kPeerColors[] = {"#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2", "#edc948", "#9c755f"};
constexpr double kTarget = 0.95;

double num(const Json& j, const char* key, double fallback = 0) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : fallback;
}

// What the chart shows: the cases' names, our series then each peer's, and
// per case the best-peer ratio (and whether some peers were not comparable).
struct ChartData {
  std::vector<std::string> names;
  std::vector<Series> series;
  std::vector<std::optional<double>> ratios;
  std::vector<bool> partial;
};

// Ours: each case's fraction of read, "error" where the case has none.
Series our_series(const Json& cases, std::vector<std::string>& names) {
  Series ours{"pagedjit (this run)", kOurs, {}, {}};
  for (const Json& row : cases) {
    names.push_back(row.value("name", "?"));
    const bool ok = row.value("error", Json()).is_null() && row.contains("frac_read");
    ours.values.push_back(ok ? std::optional<double>(num(row, "frac_read")) : std::nullopt);
    ours.missing.push_back(ok ? "" : "error");
  }
  return ours;
}

// One peer's fraction per case: "n/a" without a timing, "n/c" when not comparable.
Series peer_series(const Json& pe, const std::string& peer, const char* color, const std::vector<std::string>& names) {
  Series s{peer, color, {}, {}};
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::optional<double> v;
    std::string miss = "n/a";
    for (const Json& pc : pe.value("cases", Json::array())) {
      if (pc.value("case", "") != names[i] || !pc["peers"].contains(peer)) continue;
      const Json& p = pc["peers"][peer];
      if (p.value("comparable", false))
        v = num(p, "frac_read");
      else
        miss = "n/c";
    }
    s.values.push_back(v);
    s.missing.push_back(v ? "" : miss);
  }
  return s;
}

ChartData chart_data(const Json& run, const Json& cases, bool have_peers) {
  ChartData d;
  d.series.push_back(our_series(cases, d.names));
  d.ratios.resize(cases.size());
  d.partial.assign(cases.size(), false);
  if (!have_peers) return d;
  const Json& pe = run["peers"];
  int k = 0;
  for (const Json& pn : pe.value("names", Json::array()))
    d.series.push_back(peer_series(pe, pn.get<std::string>(), kPeerColors[k++ % 7], d.names));
  for (std::size_t i = 0; i < cases.size(); ++i)
    for (const Json& pc : pe.value("cases", Json::array()))
      if (pc.value("case", "") == d.names[i] && pc.contains("ratio") && pc["ratio"].is_number()) {
        d.ratios[i] = pc["ratio"].get<double>();
        d.partial[i] = pc.value("partial", false);
      }
  return d;
}

// Where everything goes: a group of `s` bars per case, the legend right of the plot.
struct Geometry {
  double bar_w = 22, pad = 12;
  double left = 90, top = 96, plot_h = 340, bottom = 112, legend_w = 250;
  int s = 0;  // bars per group
  double group_w = 0, plot_w = 0, width = 0, height = 0;
  double ymax = 0, step = 0;  // the y axis: its top and its grid step
  double y(double v) const { return top + plot_h * (1 - std::clamp(v, 0.0, ymax) / ymax); }
};

// `n`: groups (at least one).
Geometry geometry(const std::vector<Series>& series, int n) {
  Geometry g;
  g.s = int(series.size());
  g.group_w = std::max(88.0, g.s * g.bar_w + 2 * g.pad);
  g.plot_w = n * g.group_w;
  g.width = g.left + g.plot_w + 30 + g.legend_w;
  g.height = g.top + g.plot_h + g.bottom + 22;
  double vmax = kTarget;
  for (const auto& se : series)
    for (const auto& v : se.values)
      if (v) vmax = std::max(vmax, *v);
  g.ymax = std::clamp(std::ceil(vmax * 10 + 0.5) / 10, 1.0, 2.0);
  g.step = g.ymax <= 1.21 ? 0.1 : 0.2;
  return g;
}

// The subtitle's second line with peers: their file, GPU and geomean ratio.
std::string peers_line(const Json& pe) {
  std::string file = pe.value("file", "");
  file = file.substr(file.find_last_of('/') == std::string::npos ? 0 : file.find_last_of('/') + 1);
  std::string line =
      fmt::format("peers: {} ({}), converted with this run's bytes and read bandwidth", file, pe.value("gpu", "?"));
  if (pe.contains("geomean_ratio") && pe["geomean_ratio"].is_number())
    line += fmt::format("; best-peer time / ours: geomean {:.2f}x over {} cases{}", pe["geomean_ratio"].get<double>(),
                        pe.value("geomean_cases", 0),
                        pe.value("geomean_excludes_partial", 0) ? " (not those marked *)" : "");
  return line;
}

// The document's start: its size, background, title and the two lines on what the numbers are.
std::string header_svg(const Json& run, const Json& bw, bool have_peers, const Geometry& g) {
  const std::string gpu = run.contains("gpu") ? run["gpu"].value("name", "GPU") : "GPU";
  const std::string title = "pagedjit paged-attention decode: fraction of read bandwidth per case";
  std::string o;
  o += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} "
      "{1:.0f}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
      g.width, g.height);
  o += fmt::format("<title>{} ({})</title>\n", esc(title), esc(gpu));
  o += fmt::format("<rect x=\"0\" y=\"0\" width=\"{:.0f}\" height=\"{:.0f}\" fill=\"white\"/>\n", g.width, g.height);
  o += fmt::format("<text x=\"{:.0f}\" y=\"30\" font-size=\"19\" font-weight=\"bold\" fill=\"#111\">{}</text>\n",
                   g.left, esc(title));
  std::string line1 = fmt::format("{}: read {:.0f} GB/s, copy {:.0f} GB/s, both measured in this run", gpu,
                                  num(bw, "read_GBps"), num(bw, "copy_GBps"));
  if (run.contains("settings"))
    line1 += fmt::format("; median of {} CUDA-event timings", run["settings"].value("reps", 0));
  o += fmt::format("<text x=\"{:.0f}\" y=\"54\" font-size=\"12.5\" fill=\"#333\">{}</text>\n", g.left, esc(line1));
  const std::string line2 =
      have_peers ? peers_line(run["peers"])
                 : "fraction = (bytes a call must move / read bandwidth) / time; 1.0 is the read ceiling";
  o += fmt::format("<text x=\"{:.0f}\" y=\"72\" font-size=\"12.5\" fill=\"#333\">{}</text>\n", g.left, esc(line2));
  return o;
}

// Grid lines, the y axis and its label, and the target's dashed line.
std::string axes_svg(const Geometry& g) {
  std::string o;
  const double base = g.y(0);
  for (int t = 0; t * g.step <= g.ymax + 1e-9; ++t) {
    const double v = t * g.step, yy = g.y(v);
    o += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"1\"/>\n", g.left,
        yy, g.left + g.plot_w, yy, t == 0 ? "#222" : "#e3e3e3");
    o += fmt::format(
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"end\" fill=\"#222\">{:.1f}</text>\n",
        g.left - 8, yy + 4, v);
  }
  o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#222\"/>\n", g.left,
                   g.top, base);
  o += fmt::format(
      "<text transform=\"translate(28,{:.1f}) rotate(-90)\" font-size=\"13.5\" text-anchor=\"middle\" "
      "fill=\"#111\">fraction of read-only bandwidth (floor / time)</text>\n",
      g.top + g.plot_h / 2);
  o += fmt::format(
      "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#c0392b\" stroke-width=\"1.5\" "
      "stroke-dasharray=\"6,4\"/>\n",
      g.left, g.y(kTarget), g.left + g.plot_w, g.y(kTarget));
  return o;
}

// Bar `k` of case `c` at `x`: its value above it, or the reason it is missing;
// lowers `top_of_group` to the bar's top.
std::string bar_svg(const Series& se, const std::string& name, std::size_t c, double x, const Geometry& g,
                    double& top_of_group) {
  const double base = g.y(0);
  const auto& v = se.values[c];
  if (!v) {
    const std::string& miss = se.missing[c];
    return fmt::format(
        "<text transform=\"translate({:.1f},{:.1f}) rotate(-90)\" font-size=\"10\" fill=\"{}\">{}</text>\n",
        x + g.bar_w / 2 + 3.5, base - 4, miss == "error" ? "#c0392b" : "#888", esc(miss));
  }
  const double yy = g.y(*v);
  top_of_group = std::min(top_of_group, yy);
  std::string o = fmt::format(
      "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} / {}: "
      "{:.3f}</title></rect>\n",
      x + 1, yy, g.bar_w - 2, base - yy, se.color, esc(name), esc(se.label), *v);
  o += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#222\">{:.2f}</text>\n",
      x + g.bar_w / 2, yy - 3, *v);
  return o;
}

// Each case's group of bars, its best-peer ratio and its name; the x axis label.
std::string bars_svg(const ChartData& d, const Geometry& g) {
  std::string o;
  const double base = g.y(0);
  for (int c = 0; c < int(d.names.size()); ++c) {
    const std::size_t i = std::size_t(c);
    const double gx = g.left + c * g.group_w + (g.group_w - g.s * g.bar_w) / 2;
    double top_of_group = base;
    for (int k = 0; k < g.s; ++k)
      o += bar_svg(d.series[std::size_t(k)], d.names[i], i, gx + k * g.bar_w, g, top_of_group);
    const double cx = g.left + c * g.group_w + g.group_w / 2;
    if (d.ratios[i])
      o += fmt::format(
          "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10.5\" font-weight=\"bold\" text-anchor=\"middle\" "
          "fill=\"{}\">{:.2f}x best peer{}</text>\n",
          cx, std::min(top_of_group, g.y(kTarget)) - 16, *d.ratios[i] >= 1 ? "#1d6b2f" : "#c0392b", *d.ratios[i],
          d.partial[i] ? "*" : "");
    o += fmt::format(
        "<text transform=\"translate({:.1f},{:.1f}) rotate(-35)\" font-size=\"12\" text-anchor=\"end\" "
        "fill=\"#111\">{}</text>\n",
        cx + 4, base + 16, esc(d.names[i]));
  }
  o += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"13.5\" text-anchor=\"middle\" fill=\"#111\">case</text>\n",
      g.left + g.plot_w / 2, base + g.bottom - 8);
  return o;
}

// The legend right of the plot: each series, the target, and with peers what the marks mean.
std::string legend_svg(const ChartData& d, bool have_peers, const Geometry& g) {
  std::string o;
  const double lx = g.left + g.plot_w + 30;
  double ly = g.top + 4;
  o += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"13\" font-weight=\"bold\" fill=\"#111\">legend</text>\n", lx, ly);
  ly += 12;
  for (const auto& se : d.series) {
    o += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"14\" height=\"14\" fill=\"{}\"/>\n", lx, ly, se.color);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" fill=\"#111\">{}</text>\n", lx + 20, ly + 11.5,
                     esc(se.label));
    ly += 21;
  }
  o += fmt::format(
      "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#c0392b\" stroke-width=\"1.5\" "
      "stroke-dasharray=\"6,4\"/>\n",
      lx, ly + 7, lx + 14, ly + 7);
  o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" fill=\"#111\">target: {:.2f} of read</text>\n",
                   lx + 20, ly + 11.5, kTarget);
  ly += 30;
  std::vector<std::string> notes;
  if (have_peers) {
    notes = {"Nx best peer: best-peer time / ours", "(above 1: faster than every peer)", "n/a: the peer has no timing",
             "n/c: the peer timed other lengths", "(not comparable)"};
    if (std::find(d.partial.begin(), d.partial.end(), true) != d.partial.end())
      notes.insert(notes.end(), {"*: some peers not comparable,", "   the best may be missing"});
  }
  for (const std::string& note : notes) {
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" fill=\"#666\">{}</text>\n", lx, ly, esc(note));
    ly += 16;
  }
  return o;
}

}  // namespace

std::string render_svg(const Json& run) {
  const Json& cases = run.at("cases");
  const Json& bw = run.at("bandwidth");
  const bool have_peers = run.contains("peers") && run["peers"].is_object();
  const ChartData data = chart_data(run, cases, have_peers);
  const Geometry g = geometry(data.series, std::max<int>(1, int(cases.size())));
  return header_svg(run, bw, have_peers, g) + axes_svg(g) + bars_svg(data, g) + legend_svg(data, have_peers, g) +
         "</svg>\n";
}

}  // namespace pjbench
