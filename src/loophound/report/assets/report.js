/* loophound report: draws the icicle flame graph from the JSON in #loophound-data. */
(function () {
  "use strict";
  var holder = document.getElementById("flame");
  var details = document.getElementById("flame-details");
  var data = JSON.parse(document.getElementById("loophound-data").textContent);
  var tree = data.flame;
  if (!tree || !(tree.v > 0)) {
    holder.textContent = "No stacks in these logs: there is nothing to draw.";
    return;
  }
  var total = tree.v;
  function ms(us) {
    var value = us / 1000;
    if (value >= 100) return value.toFixed(0);
    if (value >= 1) return value.toFixed(1);
    return value.toFixed(3);
  }
  function share(us) {
    return (100 * us / total).toFixed(1) + "%";
  }
  function describe(d) {
    return d.data.n + "\n" + ms(d.data.v) + " ms blocked, " + share(d.data.v) + " of all";
  }
  var resting = "Hover over a frame for its blocked time; click it to zoom in.";
  var width = Math.max(480, Math.floor(holder.getBoundingClientRect().width));
  var tip = flamegraph.tooltip.defaultFlamegraphTooltip().text(describe);
  var chart = flamegraph
    .default()
    .width(width)
    .cellHeight(18)
    .inverted(true)
    .minFrameSize(data.minFrameSize)
    .transitionDuration(300)
    .tooltip(tip)
    .setLabelHandler(describe)
    .setDetailsElement(details)
    .setDetailsHandler(function (text) {
      details.textContent = text || resting;
    })
    .setSearchMatch(function (d, term) {
      return !!term && String(d.data.n).indexOf(term) !== -1;
    })
    .setSearchHandler(function (results, sum) {
      resting = results.length
        ? results.length + " frames match, " + ms(sum) + " ms blocked (" + share(sum) + ")"
        : "No frame matches.";
      details.textContent = resting;
    });
  details.textContent = resting;
  d3.select(holder).datum(tree).call(chart);

  var reset = document.getElementById("flame-reset");
  var search = document.getElementById("flame-search");
  reset.addEventListener("click", function () {
    chart.resetZoom();
  });
  search.addEventListener("input", function () {
    if (search.value) {
      chart.search(search.value);
    } else {
      resting = "Hover over a frame for its blocked time; click it to zoom in.";
      chart.clear();
    }
  });
  document.getElementById("flame-controls").hidden = false;
  window.loophoundFlame = chart;
})();
