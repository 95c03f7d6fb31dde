// Time-series charts: a thin wrapper around the vendored uPlot (MIT; see
// ../vendor/README). A chart follows its container's width, formats its y axis and legend in
// the series' unit (percent, bytes, bytes per second) and shows an empty state when there
// is nothing to draw.

import uPlot from '../vendor/uplot/uPlot.esm.js';
import { bytes, h, percent, rate, replace } from './dom.js';

const FORMATS = {
  percent: (v) => percent(v),
  bytes: (v) => bytes(v),
  rate: (v) => rate(v),
  number: (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString(undefined, { maximumFractionDigits: 2 })),
};

export const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2'];

/**
 * A chart in `container`.
 * @param {HTMLElement} container the element to draw in (its width is followed)
 * @param {{series: Array<{label: string}>, unit: 'percent'|'bytes'|'rate'|'number',
 *   height?: number, empty?: string}} options
 * @returns {{window: (start: number, end: number) => void,
 *   set: (xs: number[], ...ys: Array<Array<number|null>>) => void,
 *   message: (text: string, error?: boolean) => void, destroy: () => void}}
 */
export function timeChart(container, { series, unit = 'number', height = 200, empty = 'No data in this range.' }) {
  const fmt = FORMATS[unit] || FORMATS.number;
  let plot = null;
  let xWindow = null; // [start, end] unix seconds: the x axis spans the asked range
  const width = () => Math.max(container.clientWidth || 0, 280);

  const build = (data) => {
    const opts = {
      width: width(),
      height,
      scales: {
        x: { time: true, range: (u, min, max) => xWindow || [min, max > min ? max : min + 60] },
        y: unit === 'percent'
          ? { range: (u, min, max) => [0, Math.max(100, max || 0)] }
          : { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { stroke: '#616e7c', grid: { stroke: '#eef1f4' } },
        { stroke: '#616e7c', grid: { stroke: '#eef1f4' }, size: 80, values: (u, splits) => splits.map(fmt) },
      ],
      series: [
        { label: 'time' },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          spanGaps: false,
          points: { show: data[0].length < 60 },
          value: (u, v) => fmt(v),
        })),
      ],
      legend: { show: true },
    };
    return new uPlot(opts, data, container);
  };

  const observer = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: width(), height });
  });
  observer.observe(container);

  return {
    /** Fix the x axis to [start, end] (unix seconds), whatever the data covers. */
    window(start, end) {
      xWindow = [start, end];
    },
    set(xs, ...ys) {
      if (!xs.length) {
        this.message(empty);
        return;
      }
      const data = [xs, ...ys];
      if (plot) {
        plot.setData(data);
      } else {
        container.replaceChildren();
        plot = build(data);
      }
    },
    message(text, error = false) {
      if (plot) { plot.destroy(); plot = null; }
      replace(container, h('div', { class: error ? 'error-state' : 'empty' }, text));
    },
    destroy() {
      observer.disconnect();
      if (plot) plot.destroy();
      plot = null;
    },
  };
}
