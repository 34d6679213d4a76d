// The fleet as the page knows it: the latest state of every vehicle, a short trail of its
// fixes, and the filters. Fed by stream frames; read by the map layer, the sidebar and the
// details panel. Nothing here touches the DOM.

export const STATUSES = ['moving', 'idle', 'parked', 'offline', 'unknown'];
const KNOWN = new Set(STATUSES);
const MAX_LAT = 85.05112878;

/** Web Mercator in [0, 1) x [0, 1): the map layer scales it by 256 * 2^zoom. */
export function mercator(lat, lng) {
  const clamped = Math.max(-MAX_LAT, Math.min(MAX_LAT, lat));
  const sin = Math.sin((clamped * Math.PI) / 180);
  return [(lng + 180) / 360, 0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)];
}

function num(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

export class Fleet {
  constructor({trailPoints = 20} = {}) {
    this.trailPoints = trailPoints;
    /** @type {Map<string, object>} */
    this.vehicles = new Map();
    this.filter = {statuses: new Set(['moving', 'idle', 'parked', 'offline', 'unknown']), minFuel: 0};
    this.rejected = 0;
    this.listeners = new Set();
    this.version = 0;
  }

  /** listener(changedIds: string[] | null, removedIds: string[]); null = everything changed. */
  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(changed, removed) {
    this.version += 1;
    for (const listener of this.listeners) listener(changed, removed);
  }

  /** A snapshot replaces what we knew (after a reconnect, vehicles gone meanwhile disappear). */
  applySnapshot(items) {
    const seen = new Set();
    for (const item of items || []) {
      const v = this.upsert(item);
      if (v) seen.add(v.id);
    }
    const removed = [];
    for (const id of this.vehicles.keys()) {
      if (!seen.has(id)) removed.push(id);
    }
    for (const id of removed) this.vehicles.delete(id);
    this.emit(null, removed);
  }

  applyDiff(items, removedIds) {
    const changed = [];
    for (const item of items || []) {
      const v = this.upsert(item);
      if (v) changed.push(v.id);
    }
    const removed = [];
    for (const id of removedIds || []) {
      if (this.vehicles.delete(id)) removed.push(id);
    }
    if (changed.length || removed.length) this.emit(changed, removed);
  }

  /**
   * Validate one VehicleLite. A vehicle known only from its status has no position yet (null
   * lat/lng): it is kept (searchable, counted) but not drawn. A malformed item is counted in
   * `rejected` and skipped; it never breaks the page.
   */
  upsert(item) {
    if (!item || typeof item.id !== 'string' || item.id === '') {
      this.rejected += 1;
      return null;
    }
    let lat = num(item.lat);
    let lng = num(item.lng);
    if (lat !== null && lng !== null && (Math.abs(lat) > 90 || Math.abs(lng) > 180)) {
      this.rejected += 1;
      lat = null;
      lng = null;
    }
    let v = this.vehicles.get(item.id);
    if (!v) {
      v = {id: item.id, trail: [], render: null, hasPos: false, ts: null, x: NaN, y: NaN};
      this.vehicles.set(item.id, v);
    } else if (num(item.ts) !== null && v.ts !== null && item.ts < v.ts) {
      return null; // an older fix than the one shown (reordered frames): keep the newer
    }
    v.ts = num(item.ts);
    v.speed = num(item.speed);
    v.heading = num(item.heading);
    v.fuel = num(item.fuel);
    v.status = KNOWN.has(item.status) ? item.status : 'unknown';
    v.online = typeof item.online === 'boolean' ? item.online : null;
    if (lat === null || lng === null) return v; // keep the last drawn position, if any
    const [x, y] = mercator(lat, lng);
    const moved = v.x !== x || v.y !== y;
    v.hasPos = true;
    v.lat = lat;
    v.lng = lng;
    v.x = x;
    v.y = y;
    if (moved) {
      // A fix counts when either coordinate changed (not only when both did).
      v.trail.push(x, y);
      const excess = v.trail.length - this.trailPoints * 2;
      if (excess > 0) v.trail.splice(0, excess);
    }
    return v;
  }

  get(id) {
    return this.vehicles.get(id);
  }

  setFilter({statuses, minFuel}) {
    if (statuses) this.filter.statuses = new Set(statuses);
    if (minFuel !== undefined) this.filter.minFuel = minFuel;
    this.emit(null, []);
  }

  /** Is the vehicle on the map: has a position and passes the filters (no fuel reading passes at 0 %)? */
  visible(v) {
    if (!v.hasPos) return false;
    const f = this.filter;
    if (!f.statuses.has(v.status)) return false;
    if (f.minFuel > 0 && !(v.fuel !== null && v.fuel >= f.minFuel)) return false;
    return true;
  }

  countVisible() {
    let n = 0;
    for (const v of this.vehicles.values()) if (this.visible(v)) n += 1;
    return n;
  }

  /** Ids containing `query` (case-insensitive), sorted, at most `limit`. */
  search(query, limit = 30) {
    const q = query.trim().toLowerCase();
    if (!q) return [];
    const out = [];
    for (const id of this.vehicles.keys()) {
      if (id.toLowerCase().includes(q)) out.push(id);
    }
    out.sort();
    return out.slice(0, limit);
  }
}
