// The live speed and fuel chart of the selected vehicle (uPlot, vendored): seeded with the
// last hour from the history endpoint, then one point per new fix from the stream.

import uPlot from '../vendor/uplot-1.6.32/uPlot.esm.js';

const WINDOW_S = 3600;

function cssColor(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

export class SpeedFuelChart {
  constructor(container) {
    this.container = container;
    this.data = [[], [], []]; // seconds, km/h, percent
    this.plot = null;
    this.pending = false;
  }

  options(width) {
    const speedColor = cssColor('--chart-speed', '#0c5ac8');
    const fuelColor = cssColor('--chart-fuel', '#c46f00');
    const axis = {stroke: '#5b6675', grid: {stroke: 'rgba(0,0,0,0.07)'}, ticks: {stroke: 'rgba(0,0,0,0.15)'}};
    return {
      width,
      height: 170,
      cursor: {drag: {x: false, y: false}},
      scales: {x: {time: true}, kmh: {range: (u, min, max) => [0, Math.max(60, Math.ceil(max / 10) * 10)]},
        pct: {range: [0, 100]}},
      series: [
        {value: (u, v) => (v === null ? '—' : new Date(v * 1000).toLocaleTimeString('en-GB', {hour12: false}))},
        {label: 'speed', scale: 'kmh', stroke: speedColor, width: 1.5,
          value: (u, v) => (v === null ? '—' : `${v.toFixed(0)} km/h`)},
        {label: 'fuel', scale: 'pct', stroke: fuelColor, width: 1.5,
          value: (u, v) => (v === null ? '—' : `${v.toFixed(1)} %`)},
      ],
      axes: [
        {...axis, space: 80, values: (u, ticks) => {
          // Seconds on the axis only when the ticks are less than a minute apart.
          const seconds = ticks.length > 1 && ticks[1] - ticks[0] < 60;
          const format = seconds ? {hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false}
            : {hour: '2-digit', minute: '2-digit', hour12: false};
          return ticks.map((t) => new Date(t * 1000).toLocaleTimeString('en-GB', format));
        }},
        {...axis, scale: 'kmh', size: 40, values: (u, ticks) => ticks.map((t) => `${t}`)},
        {...axis, scale: 'pct', side: 1, size: 36, grid: {show: false}, values: (u, ticks) => ticks.map((t) => `${t}%`)},
      ],
      legend: {live: true},
    };
  }

  /** Replace the data (history points: [{ts, speed, fuel}], ts in ms). */
  seed(points) {
    const xs = [];
    const speeds = [];
    const fuels = [];
    const sorted = [...points].filter((p) => Number.isFinite(p.ts)).sort((a, b) => a.ts - b.ts);
    for (const p of sorted) {
      xs.push(p.ts / 1000);
      speeds.push(Number.isFinite(p.speed) ? p.speed : null);
      fuels.push(Number.isFinite(p.fuel) ? p.fuel : null);
    }
    this.data = [xs, speeds, fuels];
    this.render();
  }

  /** One new fix; redraws at most once per animation frame. */
  push(tsMs, speed, fuel) {
    if (!Number.isFinite(tsMs)) return;
    const [xs, speeds, fuels] = this.data;
    const x = tsMs / 1000;
    if (xs.length && x <= xs[xs.length - 1]) return; // already have it (history and stream overlap)
    xs.push(x);
    speeds.push(Number.isFinite(speed) ? speed : null);
    fuels.push(Number.isFinite(fuel) ? fuel : null);
    const cutoff = x - WINDOW_S;
    let drop = 0;
    while (drop < xs.length && xs[drop] < cutoff) drop += 1;
    if (drop) for (const series of this.data) series.splice(0, drop);
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  get points() {
    return this.data[0].length;
  }

  render() {
    const width = Math.max(200, this.container.clientWidth || 300);
    if (!this.plot) {
      this.plot = new uPlot(this.options(width), this.data, this.container);
    } else {
      this.plot.setData(this.data);
    }
    // Without a pointer over the chart, the legend shows the latest values instead of dashes.
    const last = this.data[0].length - 1;
    if (last >= 0 && this.plot.cursor.left < 0) this.plot.setLegend({idx: last});
  }

  resize() {
    if (this.plot) this.plot.setSize({width: Math.max(200, this.container.clientWidth), height: 170});
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.data = [[], [], []];
  }
}
