// The vehicles on the map: one canvas over Leaflet, redrawn at most once per animation frame.
//
// Why not one Leaflet marker per vehicle: at 500-1,500 DOM markers Traccar's and similar maps
// stall, and a marker-cluster group re-clusters on every move (5,000 vehicles at 1 Hz is 5,000
// re-clusterings a second). Here every frame is one pass over the fleet: project, cull to the
// view, bucket into a grid for clustering, then a handful of batched canvas paths (one per
// status colour), so the cost grows with the fleet, not with the number of updates.
// benchmarks/console_page.py measures the frame time at 5,000 vehicles.
//
// Markers glide from where they are drawn to each new fix over about one reporting interval;
// a newer fix cancels the glide and starts the next one from the current drawn position.

import {STATUSES} from './fleet.js';

const L = window.L;
const TAU = Math.PI * 2;
const CELL_PX = 64; // cluster grid cell, in screen pixels at the current zoom
const MIN_CLUSTER = 4; // fewer vehicles than this in a cell are drawn one by one
const MARKER_R = 6;
const DENSE_MARKERS = 1500; // more vehicles than this in view: small squares (drawDense)
const DENSE_MARKER_PX = 6;
const ARROW_SPREAD = 0.75; // radians either side of the heading where the point leaves the disc
const HEADING_STEP = 5; // degrees: marker sprites are drawn for 72 headings
const GLIDE_MAX_PX = 300; // a longer jump (e.g. after a reconnect) is not animated
const MAX_GLIDE_MS = 2500;
const GLIDE_STEP_PX = 1; // redraw a glide when it has moved a whole pixel (markers sit on whole pixels)
const MAX_GLIDE_WAIT_MS = 250;
const LABEL_ZOOM = 16;
const LABEL_MAX = 300;
const DEG_STEPS = [20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005];

function cssColor(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/** The status colours come from the stylesheet (--s-moving ...), so legend and map agree. */
export function statusColors() {
  return {
    moving: cssColor('--s-moving', '#1f9d55'),
    idle: cssColor('--s-idle', '#d99a00'),
    parked: cssColor('--s-parked', '#2f6fd6'),
    offline: cssColor('--s-offline', '#8b929c'),
    unknown: cssColor('--s-unknown', '#9b59b6'),
  };
}

/** Where the marker is drawn at `now` (into r.cx, r.cy); true while it is gliding. */
function advance(r, now) {
  const t = r.dur > 0 ? (now - r.t0) / r.dur : 1;
  if (t >= 1) {
    r.dur = 0;
    r.cx = r.tx;
    r.cy = r.ty;
    return false;
  }
  r.cx = r.fx + (r.tx - r.fx) * t;
  r.cy = r.fy + (r.ty - r.fy) * t;
  return true;
}

/**
 * A vehicle's marker: a disc, or for a moving vehicle a disc drawn out into a point towards its
 * heading (one contour, so the white outline stays clean and the direction reads at a glance).
 */
function markerPath(ctx, x, y, v, r) {
  if (v.status !== 'moving' || v.heading === null) {
    ctx.moveTo(x + r, y);
    ctx.arc(x, y, r, 0, TAU);
    return;
  }
  const a = ((v.heading - 90) * Math.PI) / 180; // canvas angle: 0 = east, clockwise
  const tip = r * 2;
  ctx.moveTo(x + Math.cos(a) * tip, y + Math.sin(a) * tip);
  ctx.arc(x, y, r, a + ARROW_SPREAD, a - ARROW_SPREAD + TAU);
  ctx.closePath();
}

/**
 * Pre-drawn markers, one small bitmap per status (and per 5° of heading for moving vehicles),
 * copied onto the map with drawImage. Filling one path of a thousand discs costs the software
 * rasteriser four times as much as the same number of small copies (benchmarks/README.md).
 */
class MarkerSprites {
  constructor(colors, dpr, radius) {
    this.colors = colors;
    this.dpr = dpr;
    this.radius = radius;
    this.half = Math.ceil((radius * 2 + 2) * dpr);
    this.cache = new Map();
  }

  get(status, heading) {
    const moving = status === 'moving' && heading !== null;
    const step = moving ? Math.round((((heading % 360) + 360) % 360) / HEADING_STEP) % (360 / HEADING_STEP) : -1;
    const key = `${status}:${step}`;
    let sprite = this.cache.get(key);
    if (!sprite) {
      sprite = this.draw(status, moving, step);
      this.cache.set(key, sprite);
      // An ImageBitmap is immutable: copying it needs no snapshot of a source canvas, the
      // cheapest drawImage there is. It replaces the canvas as soon as it is ready.
      if (window.createImageBitmap) {
        createImageBitmap(sprite).then((bitmap) => this.cache.set(key, bitmap), () => {});
      }
    }
    return sprite;
  }

  draw(status, moving, step) {
    const sprite = document.createElement('canvas');
    sprite.width = sprite.height = this.half * 2;
    const ctx = sprite.getContext('2d');
    ctx.setTransform(this.dpr, 0, 0, this.dpr, this.half, this.half);
    ctx.beginPath();
    markerPath(ctx, 0, 0, {status, heading: moving ? step * HEADING_STEP : null}, this.radius);
    ctx.fillStyle = this.colors[status];
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = '#ffffff';
    ctx.stroke();
    return sprite;
  }
}

export class VehicleLayer {
  constructor(map, fleet, {onSelect = () => {}, cluster = true, clusterMaxZoom = 14, trailMode = 'selected',
    animate = true} = {}) {
    this.map = map;
    this.fleet = fleet;
    this.onSelect = onSelect;
    this.cluster = cluster;
    this.clusterMaxZoom = clusterMaxZoom;
    this.trailMode = trailMode;
    this.animate = animate;
    this.graticule = false;
    this.selected = null;
    this.colors = statusColors();
    this.sprites = null;
    this.scheduled = false;
    this.zooming = false;
    this.hits = {x: new Float32Array(1024), y: new Float32Array(1024), r: new Float32Array(1024), ref: [], n: 0};
    this.stats = {drawn: 0, clusters: 0, drawMs: 0, frames: 0};
    this.lastStatsWrite = 0;

    const pane = map.createPane('vehicles');
    // Two canvases: the grid and every vehicle's trail below (redrawn when fixes arrive or the
    // view changes), the markers above (redrawn also while they glide, up to every frame).
    this.under = L.DomUtil.create('canvas', 'vehicle-canvas-under leaflet-zoom-animated', pane);
    this.underCtx = this.under.getContext('2d');
    this.underDirty = true;
    this.canvas = L.DomUtil.create('canvas', 'vehicle-canvas leaflet-zoom-animated', pane);
    this.canvas.setAttribute('data-testid', 'vehicle-canvas');
    this.ctx = this.canvas.getContext('2d');
    this.tip = L.DomUtil.create('div', 'map-tip', map.getContainer());
    this.tip.hidden = true;

    this.frame = this.frame.bind(this);
    map.on('move resize viewreset zoom', () => this.request());
    map.on('zoomanim', (e) => this.onZoomAnim(e));
    map.on('zoomend', () => {
      this.zooming = false;
      this.request();
    });
    map.on('click', (e) => this.onClick(e));
    map.on('mousemove', (e) => this.onHover(e));
    map.on('mouseout', () => this.hideTip());
    fleet.subscribe((changed, removed) => this.onFleet(changed, removed));
  }

  // -- inputs ----------------------------------------------------------------------------

  onFleet(changed) {
    const now = performance.now();
    const scale = 256 * 2 ** this.map.getZoom();
    if (changed === null) {
      for (const v of this.fleet.vehicles.values()) this.retarget(v, now, scale);
    } else {
      for (const id of changed) {
        const v = this.fleet.get(id);
        if (v) this.retarget(v, now, scale);
      }
    }
    if (this.selected && !this.fleet.get(this.selected)) this.select(null);
    this.request();
  }

  /** A new fix: glide from where the marker is drawn now, or jump when a glide makes no sense. */
  retarget(v, now, scale) {
    if (!v.hasPos) return;
    const r = v.render;
    if (!r) {
      v.render = {fx: v.x, fy: v.y, tx: v.x, ty: v.y, cx: v.x, cy: v.y, sx: 0, sy: 0, v, t0: now, dur: 0,
        lastAt: now, interval: 1000};
      return;
    }
    if (r.tx === v.x && r.ty === v.y) return;
    advance(r, now);
    const cx = r.cx;
    const cy = r.cy;
    const since = now - r.lastAt;
    r.lastAt = now;
    // The glide lasts about one reporting interval, so a steadily reporting vehicle moves
    // continuously instead of stopping at each fix.
    r.interval = 0.6 * r.interval + 0.4 * Math.min(MAX_GLIDE_MS, Math.max(200, since));
    const dx = (v.x - cx) * scale;
    const dy = (v.y - cy) * scale;
    const dist2 = dx * dx + dy * dy;
    if (this.animate && dist2 >= 1 && dist2 <= GLIDE_MAX_PX * GLIDE_MAX_PX) {
      r.fx = cx;
      r.fy = cy;
      r.t0 = now;
      r.dur = r.interval;
    } else {
      r.dur = 0; // sub-pixel (invisible) or too far: jump
    }
    r.tx = v.x;
    r.ty = v.y;
  }

  setCluster(on) {
    this.cluster = on;
    this.request();
  }

  setTrailMode(mode) {
    this.trailMode = mode;
    this.request();
  }

  setGraticule(on) {
    this.graticule = on;
    this.request();
  }

  select(id) {
    if (id === this.selected) return;
    this.selected = id;
    this.request();
    this.onSelect(id);
  }

  /** Centre the map on a vehicle (search result, details panel). */
  focus(id, minZoom = 15) {
    const v = this.fleet.get(id);
    if (!v || !v.hasPos) return;
    this.map.setView([v.lat, v.lng], Math.max(this.map.getZoom(), minZoom));
  }

  // -- the frame loop ----------------------------------------------------------------------

  /** Redraw at the next animation frame; `everything` false: only the markers moved (a glide). */
  request(everything = true) {
    if (everything) this.underDirty = true;
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(this.frame);
  }

  frame(now) {
    this.scheduled = false;
    clearTimeout(this.glideTimer);
    this.glideTimer = null;
    if (this.zooming) return; // the CSS zoom animation scales the last frame; zoomend redraws
    const started = performance.now();
    const glidePxPerMs = this.draw(started);
    const cost = performance.now() - started;
    this.stats.drawMs = 0.8 * this.stats.drawMs + 0.2 * cost;
    this.stats.frames += 1;
    if (glidePxPerMs > 0) {
      // Redraw when the fastest visible glide has moved GLIDE_STEP_PX: every frame when zoomed
      // in on fast vehicles, a few times a second for a city-wide view (same smoothness, far
      // less work than 60 full redraws a second).
      const wait = Math.min(MAX_GLIDE_WAIT_MS, GLIDE_STEP_PX / glidePxPerMs);
      if (wait < 20) this.request(false);
      else this.glideTimer = setTimeout(() => this.request(false), wait);
    }
    if (now - this.lastStatsWrite > 500) {
      // Visible to tests and to anyone inspecting the page; written twice a second at most.
      this.lastStatsWrite = now;
      const ds = this.canvas.dataset;
      ds.drawn = String(this.stats.drawn);
      ds.clusters = String(this.stats.clusters);
      ds.drawMs = this.stats.drawMs.toFixed(1);
    }
  }

  onZoomAnim(e) {
    this.zooming = true;
    if (!this.drawnTopLeft) return;
    const scale = this.map.getZoomScale(e.zoom, this.drawnZoom);
    const offset = this.map._latLngToNewLayerPoint(this.drawnTopLeft, e.zoom, e.center);
    L.DomUtil.setTransform(this.canvas, offset, scale);
    L.DomUtil.setTransform(this.under, offset, scale);
  }

  resize(size) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(size.x * dpr);
    const h = Math.round(size.y * dpr);
    for (const canvas of [this.canvas, this.under]) {
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
        canvas.style.width = `${size.x}px`;
        canvas.style.height = `${size.y}px`;
        this.underDirty = true;
      }
    }
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.underCtx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  /** Draw one frame; returns the speed (px/ms) of the fastest visible glide, 0 when none. */
  draw(now) {
    const map = this.map;
    const size = map.getSize();
    this.resize(size);
    const topLeft = map.containerPointToLayerPoint([0, 0]);
    L.DomUtil.setPosition(this.canvas, topLeft);
    L.DomUtil.setPosition(this.under, topLeft);
    const zoom = map.getZoom();
    this.drawnZoom = zoom;
    this.drawnTopLeft = map.containerPointToLatLng([0, 0]);
    const scale = 256 * 2 ** zoom;
    const origin = map.getPixelOrigin();
    const ox = origin.x + topLeft.x;
    const oy = origin.y + topLeft.y;
    const ctx = this.ctx;
    ctx.clearRect(0, 0, size.x, size.y);

    // 1. Project and cull: the vehicles that pass the filters and fall in the view.
    // The screen position is kept on the vehicle's render state (v.render.sx/sy) and the
    // arrays are reused: no allocation per vehicle per frame, so no garbage-collector pauses.
    const margin = 2 * CELL_PX;
    const pts = this.pts || (this.pts = []);
    pts.length = 0;
    let glide = 0;
    let selectedPt = null;
    for (const v of this.fleet.vehicles.values()) {
      if (!this.fleet.visible(v)) continue;
      if (!v.render) this.retarget(v, now, scale);
      const r = v.render;
      const moving = advance(r, now);
      const sx = r.cx * scale - ox;
      const sy = r.cy * scale - oy;
      if (sx < -margin || sy < -margin || sx > size.x + margin || sy > size.y + margin) continue;
      if (moving) {
        const speed = (Math.abs(r.tx - r.fx) + Math.abs(r.ty - r.fy)) * scale / r.dur;
        if (speed > glide) glide = speed;
      }
      r.sx = sx;
      r.sy = sy;
      if (v.id === this.selected) selectedPt = r;
      else pts.push(r);
    }

    // 2. Cluster: a world-anchored grid (cells do not shift while panning).
    let singles = pts;
    const clusters = [];
    if (this.cluster && zoom <= this.clusterMaxZoom && pts.length >= MIN_CLUSTER) {
      const cells = new Map();
      for (const pt of pts) {
        const key = Math.floor((pt.sx + ox) / CELL_PX) * 4194304 + Math.floor((pt.sy + oy) / CELL_PX);
        let cell = cells.get(key);
        if (!cell) cells.set(key, (cell = []));
        cell.push(pt);
      }
      singles = [];
      for (const cell of cells.values()) {
        if (cell.length < MIN_CLUSTER) {
          for (const pt of cell) singles.push(pt);
          continue;
        }
        let sx = 0;
        let sy = 0;
        const counts = {moving: 0, idle: 0, parked: 0, offline: 0, unknown: 0};
        for (const pt of cell) {
          sx += pt.sx;
          sy += pt.sy;
          counts[pt.v.status] += 1;
        }
        clusters.push({sx: sx / cell.length, sy: sy / cell.length, n: cell.length, counts, members: cell});
      }
    }

    // 3. Paint: trails, markers by colour, arrows, clusters, the selected vehicle, labels.
    this.hits.n = 0;
    if (this.underDirty) {
      this.underDirty = false;
      const under = this.underCtx;
      under.clearRect(0, 0, size.x, size.y);
      if (this.graticule) this.drawGraticule(under, size, scale);
      if (this.trailMode === 'all' && singles.length <= DENSE_MARKERS) this.drawAllTrails(under, singles, scale, ox, oy);
    }
    if (selectedPt && this.trailMode !== 'none') this.drawSelectedTrail(ctx, selectedPt, scale, ox, oy);
    this.drawMarkers(ctx, singles);
    this.drawClusters(ctx, clusters);
    if (selectedPt) this.drawSelected(ctx, selectedPt);
    if (zoom >= LABEL_ZOOM && singles.length <= LABEL_MAX) this.drawLabels(ctx, singles, selectedPt);
    this.stats.drawn = singles.length + (selectedPt ? 1 : 0);
    this.stats.clusters = clusters.length;
    return glide;
  }

  addHit(x, y, r, ref) {
    const h = this.hits;
    if (h.n >= h.x.length) {
      for (const key of ['x', 'y', 'r']) {
        const bigger = new Float32Array(h[key].length * 2);
        bigger.set(h[key]);
        h[key] = bigger;
      }
    }
    h.x[h.n] = x;
    h.y[h.n] = y;
    h.r[h.n] = r;
    h.ref[h.n] = ref;
    h.n += 1;
  }

  /** Every vehicle's trail up to its latest fix (the marker glides along its last segment). */
  drawAllTrails(ctx, singles, scale, ox, oy) {
    // One-pixel lines with plain joins: the rasteriser's fast path (hundreds of trails).
    ctx.lineJoin = 'miter';
    ctx.lineCap = 'butt';
    ctx.lineWidth = 1;
    ctx.strokeStyle = 'rgba(30, 60, 110, 0.5)';
    ctx.beginPath();
    for (const pt of singles) {
      const trail = pt.v.trail;
      if (trail.length < 4) continue;
      ctx.moveTo(trail[0] * scale - ox, trail[1] * scale - oy);
      for (let i = 2; i < trail.length; i += 2) ctx.lineTo(trail[i] * scale - ox, trail[i + 1] * scale - oy);
    }
    ctx.stroke();
  }

  /** The selected vehicle's trail, every frame: up to the fix before the last, then to the marker. */
  drawSelectedTrail(ctx, pt, scale, ox, oy) {
    const trail = pt.v.trail;
    if (trail.length < 4) return;
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    ctx.beginPath();
    ctx.moveTo(trail[0] * scale - ox, trail[1] * scale - oy);
    for (let i = 2; i < trail.length - 2; i += 2) ctx.lineTo(trail[i] * scale - ox, trail[i + 1] * scale - oy);
    ctx.lineTo(pt.sx, pt.sy);
    ctx.lineWidth = 3.5;
    ctx.strokeStyle = 'rgba(12, 90, 200, 0.75)';
    ctx.stroke();
  }

  drawMarkers(ctx, singles) {
    if (!singles.length) return;
    if (singles.length > DENSE_MARKERS) {
      this.drawDense(ctx, singles);
      return;
    }
    const dpr = window.devicePixelRatio || 1;
    if (!this.sprites || this.sprites.dpr !== dpr) this.sprites = new MarkerSprites(this.colors, dpr, MARKER_R);
    const sprites = this.sprites;
    const half = sprites.half;
    // Device pixels, whole: a sprite is copied 1:1 (no resampling).
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    for (const pt of singles) {
      const v = pt.v;
      ctx.drawImage(sprites.get(v.status, v.heading), Math.round(pt.sx * dpr) - half, Math.round(pt.sy * dpr) - half);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    for (const pt of singles) this.addHit(pt.sx, pt.sy, MARKER_R + 3, pt.v);
  }

  /**
   * Thousands of vehicles in view (clustering off, zoomed out): they overlap anyway, and a
   * small square per vehicle, batched by colour, costs a fifth of a sprite copy — the frame
   * stays short. Headings are not drawn at that density; zoom in (or cluster) to see them.
   */
  drawDense(ctx, singles) {
    const size = DENSE_MARKER_PX;
    const half = size / 2;
    const byStatus = this.byStatus || (this.byStatus = new Map(STATUSES.map((s) => [s, []])));
    for (const group of byStatus.values()) group.length = 0;
    for (const pt of singles) byStatus.get(pt.v.status).push(pt);
    for (const [status, group] of byStatus) {
      if (!group.length) continue;
      ctx.fillStyle = this.colors[status];
      for (const pt of group) ctx.fillRect(Math.round(pt.sx - half), Math.round(pt.sy - half), size, size);
    }
    for (const pt of singles) this.addHit(pt.sx, pt.sy, half + 3, pt.v);
  }

  drawClusters(ctx, clusters) {
    if (!clusters.length) return;
    ctx.font = '600 12px system-ui, sans-serif';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    for (const c of clusters) {
      const r = Math.min(30, 13 + 4 * Math.log10(c.n));
      // A ring split by status share, a white disc with the count.
      let start = -Math.PI / 2;
      for (const status of STATUSES) {
        const n = c.counts[status];
        if (!n) continue;
        const end = start + (TAU * n) / c.n;
        ctx.beginPath();
        ctx.moveTo(c.sx, c.sy);
        ctx.arc(c.sx, c.sy, r, start, end);
        ctx.closePath();
        ctx.fillStyle = this.colors[status];
        ctx.fill();
        start = end;
      }
      ctx.beginPath();
      ctx.arc(c.sx, c.sy, r - 5, 0, TAU);
      ctx.fillStyle = 'rgba(255, 255, 255, 0.94)';
      ctx.fill();
      ctx.fillStyle = '#1d2b3a';
      ctx.fillText(String(c.n), c.sx, c.sy + 0.5);
      this.addHit(c.sx, c.sy, r, c);
    }
  }

  drawSelected(ctx, pt) {
    const {v, sx, sy} = pt;
    ctx.beginPath();
    ctx.arc(sx, sy, MARKER_R + 6, 0, TAU);
    ctx.fillStyle = 'rgba(12, 90, 200, 0.18)';
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = 'rgba(12, 90, 200, 0.9)';
    ctx.stroke();
    ctx.beginPath();
    markerPath(ctx, sx, sy, v, MARKER_R + 1);
    ctx.fillStyle = this.colors[v.status];
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = '#ffffff';
    ctx.stroke();
    this.addHit(sx, sy, MARKER_R + 6, v);
  }

  drawLabels(ctx, singles, selectedPt) {
    ctx.font = '11px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    ctx.lineWidth = 3;
    ctx.strokeStyle = 'rgba(255, 255, 255, 0.9)';
    ctx.fillStyle = '#1d2b3a';
    const all = selectedPt ? [...singles, selectedPt] : singles;
    for (const pt of all) {
      ctx.strokeText(pt.v.id, pt.sx + MARKER_R + 8, pt.sy);
      ctx.fillText(pt.v.id, pt.sx + MARKER_R + 8, pt.sy);
    }
  }

  /** Latitude/longitude lines, so a map without tiles still shows where and how far. */
  drawGraticule(ctx, size, scale) {
    const map = this.map;
    const nw = map.containerPointToLatLng([0, 0]);
    const se = map.containerPointToLatLng([size.x, size.y]);
    const pxPerDeg = scale / 360;
    const step = DEG_STEPS.find((s) => s * pxPerDeg < 160) || DEG_STEPS[DEG_STEPS.length - 1];
    const digits = Math.max(0, Math.ceil(-Math.log10(step)));
    ctx.beginPath();
    ctx.lineWidth = 1;
    ctx.strokeStyle = 'rgba(60, 80, 110, 0.16)';
    ctx.font = '10px system-ui, sans-serif';
    ctx.fillStyle = 'rgba(60, 80, 110, 0.55)';
    ctx.textBaseline = 'top';
    ctx.textAlign = 'left';
    for (let lng = Math.ceil(nw.lng / step) * step; lng <= se.lng; lng += step) {
      const x = Math.round(map.latLngToContainerPoint([nw.lat, lng]).x) + 0.5;
      ctx.moveTo(x, 0);
      ctx.lineTo(x, size.y);
      ctx.fillText(`${lng.toFixed(digits)}°`, x + 3, 3);
    }
    for (let lat = Math.ceil(se.lat / step) * step; lat <= nw.lat; lat += step) {
      const y = Math.round(map.latLngToContainerPoint([lat, nw.lng]).y) + 0.5;
      ctx.moveTo(0, y);
      ctx.lineTo(size.x, y);
      ctx.fillText(`${lat.toFixed(digits)}°`, 3, y + 3);
    }
    ctx.stroke();
  }

  // -- pointer ------------------------------------------------------------------------------

  hitAt(point) {
    const h = this.hits;
    for (let i = h.n - 1; i >= 0; i -= 1) {
      const dx = h.x[i] - point.x;
      const dy = h.y[i] - point.y;
      if (dx * dx + dy * dy <= h.r[i] * h.r[i]) return h.ref[i];
    }
    return null;
  }

  onClick(e) {
    const hit = this.hitAt(e.containerPoint);
    if (!hit) return;
    if (hit.members) {
      const bounds = L.latLngBounds(hit.members.map((pt) => [pt.v.lat, pt.v.lng]));
      this.map.fitBounds(bounds, {padding: [48, 48], maxZoom: this.clusterMaxZoom + 1});
    } else {
      this.select(hit.id);
    }
  }

  onHover(e) {
    const hit = this.hitAt(e.containerPoint);
    const container = this.map.getContainer();
    container.classList.toggle('over-vehicle', Boolean(hit));
    if (!hit) {
      this.hideTip();
      return;
    }
    this.tip.textContent = hit.members
      ? `${hit.n} vehicles: click to zoom in`
      : `${hit.id} · ${hit.status}${hit.speed !== null ? ` · ${Math.round(hit.speed)} km/h` : ''}`;
    this.tip.style.transform = `translate(${Math.round(e.containerPoint.x + 14)}px, ${Math.round(e.containerPoint.y - 10)}px)`;
    this.tip.hidden = false;
  }

  hideTip() {
    this.tip.hidden = true;
    this.map.getContainer().classList.remove('over-vehicle');
  }
}
