import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2'];

/**
 * A small time-series chart (uPlot): `t` in ms since the epoch, one line per
 * entry of `lines` (null: no value at that sample, drawn as a gap).
 */
export function Chart({
  title,
  t,
  lines,
  unit,
  testid,
}: {
  title: string;
  t: number[];
  lines: Array<{ label: string; values: Array<number | null> }>;
  unit: string;
  testid?: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = lines.map((l) => l.label).join('\u0000');
  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    const opts: uPlot.Options = {
      width: Math.max(280, el.clientWidth || 380),
      height: 160,
      legend: { show: true },
      scales: { x: { time: true } },
      axes: [{}, { size: 50, values: (_u, splits) => splits.map((v) => `${v}${unit}`) }],
      series: [
        {},
        ...lines.map((l, i) => ({ label: l.label, stroke: COLORS[i % COLORS.length]!, width: 1.5, spanGaps: false })),
      ],
    };
    plot.current = new uPlot(opts, [[], ...lines.map(() => [])], el);
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, [shape, unit]);
  useEffect(() => {
    plot.current?.setData([t.map((x) => x / 1000), ...lines.map((l) => l.values)]);
  }, [t, lines]);
  return (
    <div class="chart" data-testid={testid} data-points={t.length}>
      <h3>{title}</h3>
      <div ref={box} />
    </div>
  );
}
