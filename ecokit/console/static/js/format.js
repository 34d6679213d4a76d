// Number and time formatting for the sidebar and the details panel.

const DASH = '—';

export function isNum(value) {
  return typeof value === 'number' && Number.isFinite(value);
}

export function int(value) {
  return isNum(value) ? Math.round(value).toLocaleString('en-US') : DASH;
}

export function fixed(value, digits = 1, unit = '') {
  if (!isNum(value)) return DASH;
  const text = value.toLocaleString('en-US', {minimumFractionDigits: digits, maximumFractionDigits: digits});
  return unit ? `${text} ${unit}` : text;
}

/** A rate or a latency with a precision that fits its size (3 significant digits, at most 1 decimal). */
export function measure(value, unit) {
  if (!isNum(value)) return DASH;
  const digits = Math.abs(value) >= 100 ? 0 : 1;
  return fixed(value, digits, unit);
}

/** A duration in ms: "12.3 ms", "412 ms", "2.2 s" (fits a sidebar counter). */
export function millis(value) {
  if (!isNum(value)) return DASH;
  return Math.abs(value) >= 1000 ? fixed(value / 1000, 1, 's') : measure(value, 'ms');
}

export function coord(value) {
  return isNum(value) ? value.toFixed(5) : DASH;
}

/** Local wall-clock time, 24 h (the chart's axis uses local time too). */
export function clock(tsMs) {
  if (!isNum(tsMs)) return DASH;
  return new Date(tsMs).toLocaleTimeString('en-GB', {hour12: false});
}

/** "4 s ago", "3 min ago": how old a fix is. */
export function age(tsMs, nowMs = Date.now()) {
  if (!isNum(tsMs)) return DASH;
  const s = Math.max(0, Math.round((nowMs - tsMs) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export {DASH};
