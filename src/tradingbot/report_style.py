"""The report's look: its CSS, the inline script that lists rendering errors, the policies'
colours and the common chart layout."""

from __future__ import annotations

import plotly.graph_objects as go

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1500px;
padding:0 24px 48px;color:#222;background:#fafafa}
h1{margin:24px 0 4px}h2{margin-top:40px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin:28px 0 8px}.note{color:#8a6d3b;background:#fcf8e3;padding:6px 10px;border-radius:4px}
table{border-collapse:collapse;font-size:12px;margin:8px 0 16px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f0f0f0}
td{white-space:nowrap}th{font-weight:600;vertical-align:bottom;min-width:3.5em}
td.text,th.text{text-align:left}.scroll{overflow-x:auto;max-width:100%}
.scroll table{max-width:none}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:12px}
.chart{background:#fff;border:1px solid #e3e3e3;border-radius:4px;padding:4px;min-height:200px}
pre{background:#fff;border:1px solid #ddd;padding:12px;overflow-x:auto;font-size:12px}
nav a{margin-right:14px}#report-errors{background:#f2dede;color:#a94442;padding:8px 12px}
"""

# Collects JavaScript errors, failed resource loads and charts that did not render into
# #report-errors (shown at the top of the page), and records each chart's rendered size.
ERROR_CAPTURE_JS = """
(function () {
  var errors = [];
  function render() {
    var box = document.getElementById("report-errors");
    if (!box) { return; }
    box.setAttribute("data-count", String(errors.length));
    if (errors.length === 0) { return; }
    box.hidden = false;
    var list = box.querySelector("ul");
    list.textContent = "";
    errors.forEach(function (msg) {
      var li = document.createElement("li"); li.textContent = msg; list.appendChild(li);
    });
  }
  function record(msg) { errors.push(String(msg)); render(); }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { record("failed to load " + (t.src || t.href)); }
    else { record(e.message || "error"); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    record("unhandled rejection: " + ((e.reason && e.reason.message) || e.reason));
  });
  var consoleError = console.error;
  console.error = function () {
    record(Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
  document.addEventListener("DOMContentLoaded", render);
  window.addEventListener("load", function () {
    var divs = document.querySelectorAll(".plotly-graph-div");
    divs.forEach(function (div) {
      var rect = div.getBoundingClientRect();
      var svg = div.querySelector("svg.main-svg");
      var size = Math.round(rect.width) + "x" + Math.round(rect.height);
      div.setAttribute("data-rendered-size", size);
      if (!svg || rect.width <= 0 || rect.height <= 0) {
        record("chart " + div.id + " did not render (" + size + ")");
      }
    });
    document.body.setAttribute("data-charts", String(divs.length));
    render();
  });
})();
"""


POLICY_COLORS = {"agent": "#1f77b4", "buy_and_hold": "#ff7f0e", "flat": "#7f7f7f"}
FALLBACK_COLORS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
TEMPLATE = "plotly_white"
HEIGHT = 380


def policy_color(policy: str, order: int = 0) -> str:
    """The colour a policy gets in every chart (agent blue, buy-and-hold orange, flat grey).

    Parameters
    ----------
    policy: the policy's name.
    order: its position among the plotted policies, to pick a colour for unknown policies.
    """
    return POLICY_COLORS.get(policy, FALLBACK_COLORS[order % len(FALLBACK_COLORS)])


def chart_layout(fig: go.Figure, title: str, yaxis_title: str, height: int = HEIGHT) -> go.Figure:
    """The report's common chart layout: title, template, height, margins, legend on top."""
    fig.update_layout(
        title={"text": title, "x": 0.01},
        template=TEMPLATE,
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        hovermode="x unified",
        yaxis_title=yaxis_title,
    )
    return fig
