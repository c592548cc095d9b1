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

}  // namespace

std::string render_svg(const Json& run) {
  const Json& cases = run.at("cases");
  const Json& bw = run.at("bandwidth");
  const bool have_peers = run.contains("peers") && run["peers"].is_object();
  const int n = std::max<int>(1, int(cases.size()));

  // The data: ours, then each peer.
  std::vector<std::string> names;
  std::vector<Series> series;
  Series ours{"pagedjit (this run)", kOurs, {}, {}};
  for (const Json& row : cases) {
    names.push_back(row.value("name", "?"));
    const bool ok = row.value("error", Json()).is_null() && row.contains("frac_read");
    ours.values.push_back(ok ? std::optional<double>(num(row, "frac_read")) : std::nullopt);
    ours.missing.push_back(ok ? "" : "error");
  }
  series.push_back(ours);
  std::vector<std::optional<double>> ratios(cases.size());
  std::vector<bool> partial(cases.size(), false);
  if (have_peers) {
    const Json& pe = run["peers"];
    int k = 0;
    for (const Json& pn : pe.value("names", Json::array())) {
      const std::string peer = pn.get<std::string>();
      Series s{peer, kPeerColors[k++ % 7], {}, {}};
      for (std::size_t i = 0; i < cases.size(); ++i) {
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
      series.push_back(s);
    }
    for (std::size_t i = 0; i < cases.size(); ++i)
      for (const Json& pc : pe.value("cases", Json::array()))
        if (pc.value("case", "") == names[i] && pc.contains("ratio") && pc["ratio"].is_number()) {
          ratios[i] = pc["ratio"].get<double>();
          partial[i] = pc.value("partial", false);
        }
  }
  const int s = int(series.size());

  // Geometry.
  const double bar_w = 22, pad = 12;
  const double group_w = std::max(88.0, s * bar_w + 2 * pad);
  const double left = 90, top = 96, plot_h = 340, bottom = 112, legend_w = 250;
  const double plot_w = n * group_w;
  const double width = left + plot_w + 30 + legend_w;
  const double height = top + plot_h + bottom + 22;
  double vmax = kTarget;
  for (const auto& se : series)
    for (const auto& v : se.values)
      if (v) vmax = std::max(vmax, *v);
  const double ymax = std::clamp(std::ceil(vmax * 10 + 0.5) / 10, 1.0, 2.0);
  const double step = ymax <= 1.21 ? 0.1 : 0.2;
  const auto y = [&](double v) { return top + plot_h * (1 - std::clamp(v, 0.0, ymax) / ymax); };
  const double base = y(0);

  const std::string gpu = run.contains("gpu") ? run["gpu"].value("name", "GPU") : "GPU";
  const std::string title = "pagedjit paged-attention decode: fraction of read bandwidth per case";
  std::string o;
  o += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} "
      "{1:.0f}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
      width, height);
  o += fmt::format("<title>{} ({})</title>\n", esc(title), esc(gpu));
  o += fmt::format("<rect x=\"0\" y=\"0\" width=\"{:.0f}\" height=\"{:.0f}\" fill=\"white\"/>\n", width, height);

  // Title and what the numbers are.
  o += fmt::format("<text x=\"{:.0f}\" y=\"30\" font-size=\"19\" font-weight=\"bold\" fill=\"#111\">{}</text>\n", left,
                   esc(title));
  std::string line1 = fmt::format("{}: read {:.0f} GB/s, copy {:.0f} GB/s, both measured in this run", gpu,
                                  num(bw, "read_GBps"), num(bw, "copy_GBps"));
  if (run.contains("settings"))
    line1 += fmt::format("; median of {} CUDA-event timings", run["settings"].value("reps", 0));
  o += fmt::format("<text x=\"{:.0f}\" y=\"54\" font-size=\"12.5\" fill=\"#333\">{}</text>\n", left, esc(line1));
  std::string line2 = "fraction = (bytes a call must move / read bandwidth) / time; 1.0 is the read ceiling";
  if (have_peers) {
    const Json& pe = run["peers"];
    std::string file = pe.value("file", "");
    file = file.substr(file.find_last_of('/') == std::string::npos ? 0 : file.find_last_of('/') + 1);
    line2 =
        fmt::format("peers: {} ({}), converted with this run's bytes and read bandwidth", file, pe.value("gpu", "?"));
    if (pe.contains("geomean_ratio") && pe["geomean_ratio"].is_number())
      line2 += fmt::format("; best-peer time / ours: geomean {:.2f}x over {} cases{}",
                           pe["geomean_ratio"].get<double>(), pe.value("geomean_cases", 0),
                           pe.value("geomean_excludes_partial", 0) ? " (not those marked *)" : "");
  }
  o += fmt::format("<text x=\"{:.0f}\" y=\"72\" font-size=\"12.5\" fill=\"#333\">{}</text>\n", left, esc(line2));

  // Grid lines and the y axis.
  for (int t = 0; t * step <= ymax + 1e-9; ++t) {
    const double v = t * step, yy = y(v);
    o += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"1\"/>\n", left, yy,
        left + plot_w, yy, t == 0 ? "#222" : "#e3e3e3");
    o += fmt::format(
        "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"end\" fill=\"#222\">{:.1f}</text>\n", left - 8,
        yy + 4, v);
  }
  o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#222\"/>\n", left, top,
                   base);
  o += fmt::format(
      "<text transform=\"translate(28,{:.1f}) rotate(-90)\" font-size=\"13.5\" text-anchor=\"middle\" "
      "fill=\"#111\">fraction of read-only bandwidth (floor / time)</text>\n",
      top + plot_h / 2);

  // The target.
  o += fmt::format(
      "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#c0392b\" stroke-width=\"1.5\" "
      "stroke-dasharray=\"6,4\"/>\n",
      left, y(kTarget), left + plot_w, y(kTarget));

  // Bars.
  for (int g = 0; g < int(cases.size()); ++g) {
    const double gx = left + g * group_w + (group_w - s * bar_w) / 2;
    double top_of_group = base;
    for (int k = 0; k < s; ++k) {
      const double x = gx + k * bar_w;
      const auto& v = series[std::size_t(k)].values[std::size_t(g)];
      if (v) {
        const double yy = y(*v);
        top_of_group = std::min(top_of_group, yy);
        o += fmt::format(
            "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} / {}: "
            "{:.3f}</title></rect>\n",
            x + 1, yy, bar_w - 2, base - yy, series[std::size_t(k)].color, esc(names[std::size_t(g)]),
            esc(series[std::size_t(k)].label), *v);
        o += fmt::format(
            "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#222\">{:.2f}</text>\n",
            x + bar_w / 2, yy - 3, *v);
      } else {
        const std::string& miss = series[std::size_t(k)].missing[std::size_t(g)];
        o += fmt::format(
            "<text transform=\"translate({:.1f},{:.1f}) rotate(-90)\" font-size=\"10\" fill=\"{}\">{}</text>\n",
            x + bar_w / 2 + 3.5, base - 4, miss == "error" ? "#c0392b" : "#888", esc(miss));
      }
    }
    const double cx = left + g * group_w + group_w / 2;
    if (ratios[std::size_t(g)])
      o += fmt::format(
          "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10.5\" font-weight=\"bold\" text-anchor=\"middle\" "
          "fill=\"{}\">{:.2f}x best peer{}</text>\n",
          cx, std::min(top_of_group, y(kTarget)) - 16, *ratios[std::size_t(g)] >= 1 ? "#1d6b2f" : "#c0392b",
          *ratios[std::size_t(g)], partial[std::size_t(g)] ? "*" : "");
    o += fmt::format(
        "<text transform=\"translate({:.1f},{:.1f}) rotate(-35)\" font-size=\"12\" text-anchor=\"end\" "
        "fill=\"#111\">{}</text>\n",
        cx + 4, base + 16, esc(names[std::size_t(g)]));
  }
  o += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"13.5\" text-anchor=\"middle\" fill=\"#111\">case</text>\n",
      left + plot_w / 2, base + bottom - 8);

  // Legend.
  const double lx = left + plot_w + 30;
  double ly = top + 4;
  o += fmt::format(
      "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"13\" font-weight=\"bold\" fill=\"#111\">legend</text>\n", lx, ly);
  ly += 12;
  for (const auto& se : series) {
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
    if (std::find(partial.begin(), partial.end(), true) != partial.end())
      notes.insert(notes.end(), {"*: some peers not comparable,", "   the best may be missing"});
  }
  for (const std::string& note : notes) {
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" fill=\"#666\">{}</text>\n", lx, ly, esc(note));
    ly += 16;
  }
  o += "</svg>\n";
  return o;
}

}  // namespace pjbench
