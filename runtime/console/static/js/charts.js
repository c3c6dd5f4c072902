// Small SVG charts for the overview: bars (stacked when there are two series) and a line.
// Drawn at the container's width and redrawn when it changes; every bar has a tooltip.

import { format } from "./core.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 190;
const PAD = { top: 10, right: 8, bottom: 24, left: 52 };

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  for (const child of children) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return element;
}

// A round upper bound for the axis: 1, 2, 2.5 or 5 times a power of ten.
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

const dayLabel = (day) =>
  new Date(`${day}T00:00:00Z`).toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });

function frame(container, labels, top, formatValue, description) {
  const width = Math.max(container.clientWidth || 520, 240);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": description });
  const plotWidth = width - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const y = (value) => PAD.top + plotHeight - (value / top) * plotHeight;
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    chart.append(
      svg("line", { class: "grid-line", x1: PAD.left, x2: width - PAD.right, y1: y(value), y2: y(value) }),
      svg("text", { class: "axis-label", x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }, formatValue(value)),
    );
  }
  const band = plotWidth / Math.max(labels.length, 1);
  const every = Math.max(1, Math.ceil(labels.length / Math.max(1, Math.floor(plotWidth / 56))));
  const last = labels.length - 1;
  labels.forEach((label, index) => {
    // Every `every`-th day counted back from the last, so the latest day always has its label.
    if ((last - index) % every !== 0) return;
    chart.append(svg("text", { class: "axis-label", x: PAD.left + band * (index + 0.5), y: HEIGHT - 6, "text-anchor": "middle" }, dayLabel(label)));
  });
  return { chart, band, y, plotHeight };
}

function drawn(container, draw) {
  const render = () => container.replaceChildren(draw());
  render();
  container._resize?.disconnect();
  let width = container.clientWidth;
  container._resize = new ResizeObserver(() => {
    if (container.clientWidth !== width) {
      width = container.clientWidth;
      render();
    }
  });
  container._resize.observe(container);
}

// series: [{name, values, className}], stacked bottom to top.
export function barChart(container, { labels, series, formatValue = format.compact, unit = "" }) {
  drawn(container, () => {
    const totals = labels.map((_, index) => series.reduce((sum, one) => sum + (one.values[index] || 0), 0));
    const top = niceMax(Math.max(0, ...totals));
    const description = `${series.map((one) => one.name).join(" and ")} per day`;
    const { chart, band, y } = frame(container, labels, top, formatValue, description);
    const barWidth = Math.max(2, Math.min(36, band * 0.68));
    labels.forEach((label, index) => {
      let base = 0;
      const x = PAD.left + band * index + (band - barWidth) / 2;
      const parts = series.map((one) => `${formatValue(one.values[index] || 0)} ${one.name}`).join(", ");
      const group = svg("g", {}, svg("title", {}, `${dayLabel(label)}: ${parts}${unit}`));
      for (const one of series) {
        const value = one.values[index] || 0;
        if (value > 0) {
          const height = Math.max(1, y(base) - y(base + value));
          group.append(svg("rect", { class: one.className, x, y: y(base + value), width: barWidth, height, rx: 2 }));
        }
        base += value;
      }
      // An invisible full-height target, so the tooltip shows on small bars and empty days too.
      group.append(svg("rect", { x: PAD.left + band * index, y: PAD.top, width: band, height: HEIGHT - PAD.top - PAD.bottom, fill: "transparent" }));
      chart.append(group);
    });
    return chart;
  });
}

// values in [0, 1]; null where there were no requests (no point drawn).
export function rateChart(container, { labels, values, name }) {
  drawn(container, () => {
    const highest = Math.max(0, ...values.filter((value) => value !== null));
    const top = Math.max(0.05, niceMax(highest));
    const percent = (value) => `${Math.round(value * 1000) / 10}%`;
    const { chart, band, y } = frame(container, labels, top, percent, `${name} per day`);
    const points = values
      .map((value, index) => (value === null ? null : { x: PAD.left + band * (index + 0.5), y: y(value), value, label: labels[index] }))
      .filter(Boolean);
    if (points.length) {
      const path = points.map((point, index) => `${index ? "L" : "M"}${point.x.toFixed(1)},${point.y.toFixed(1)}`).join(" ");
      const floor = y(0).toFixed(1);
      chart.append(svg("path", { class: "area", d: `${path} L${points.at(-1).x.toFixed(1)},${floor} L${points[0].x.toFixed(1)},${floor} Z` }));
      chart.append(svg("path", { class: "line", d: path }));
      for (const point of points) {
        chart.append(svg("circle", { class: "point", cx: point.x, cy: point.y, r: 3 }, svg("title", {}, `${dayLabel(point.label)}: ${percent(point.value)} ${name}`)));
      }
    }
    return chart;
  });
}
