// The console page: wires the API client, the stream, the fleet store, the map and the panels.
// docs/console.md describes what each part shows.

import {Api, ApiError} from './api.js';
import {CommandsPanel} from './commands.js';
import {ConnectionView} from './connection.js';
import {byId, setText} from './dom.js';
import {EventFeed} from './events.js';
import {Fleet} from './fleet.js';
import {GeofenceLayer} from './geofences.js';
import {PipelinePanel} from './pipeline.js';
import {Sidebar} from './sidebar.js';
import {Stream, streamUrl} from './stream.js';
import {BaseMap} from './tiles.js';
import {VehicleLayer} from './vehicle-layer.js';
import {VehiclePanel} from './vehicle-panel.js';

const L = window.L;
const WORLD = {center: [20, 0], zoom: 2};

/** The view in the address bar: #zoom/lat/lng[/vehicle], like OpenStreetMap (shareable). */
function readHash() {
  const parts = decodeURIComponent(location.hash.slice(1)).split('/');
  if (parts.length < 3) return null;
  const [zoom, lat, lng] = parts.slice(0, 3).map(Number);
  if (![zoom, lat, lng].every(Number.isFinite) || Math.abs(lat) > 90 || Math.abs(lng) > 180) return null;
  return {zoom, center: [lat, lng], vehicle: parts[3] || null};
}

function writeHash(map, selected) {
  const c = map.getCenter();
  const zoom = map.getZoom();
  const digits = Math.max(2, Math.ceil(Math.log2(zoom + 1)));
  const hash = `#${zoom}/${c.lat.toFixed(digits)}/${c.lng.toFixed(digits)}${selected ? `/${encodeURIComponent(selected)}` : ''}`;
  if (hash !== location.hash) history.replaceState(null, '', hash);
}

function showFatal(message) {
  const banner = byId('banner');
  banner.textContent = message;
  banner.dataset.state = 'unauthorized';
  banner.hidden = false;
}

async function main() {
  const api = new Api();
  let stream = null;
  const connection = new ConnectionView(byId('conn'), byId('banner'), {onRetry: () => stream && stream.retryNow()});
  let unauthorized = false;
  api.onUnauthorized = () => {
    if (unauthorized) return;
    unauthorized = true;
    connection.show({state: 'unauthorized', attempt: 0, reason: 'the console token was refused'});
    if (stream) stream.stop();
  };

  let config = {};
  try {
    config = (await api.config()) || {};
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    // Without its configuration the page still works with defaults (no tiles, 20-fix trails).
    config = {};
  }
  setText(byId('stack-name'), config.stack ? `stack ${config.stack}` : '');
  if (config.stack) document.title = `${config.stack} · ecokit console`;

  const fleet = new Fleet({trailPoints: Number(config.trail_points) || 20});
  const initial = readHash();
  const map = L.map('map', {
    center: initial ? initial.center : WORLD.center,
    zoom: initial ? initial.zoom : WORLD.zoom,
    minZoom: 2,
    maxZoom: Number(config.tiles && config.tiles.max_zoom) || 19,
    worldCopyJump: false,
    zoomSnap: 0.5,
  });
  const commands = new CommandsPanel(api, byId('d-cmd-buttons'), byId('d-cmd-list'));
  // The panel's close button and the layer's selection refer to each other (called later only).
  const panel = new VehiclePanel(api, fleet, commands, {onClose: () => layer.select(null)});
  const layer = new VehicleLayer(map, fleet, {
    onSelect: (id) => {
      if (id) panel.open(id);
      else panel.close();
      writeHash(map, id);
    },
  });

  const notice = byId('tile-notice');
  const base = new BaseMap(map, config.tiles, {
    onState: (state, host) => {
      layer.setGraticule(state !== 'tiles');
      notice.dataset.state = state;
      if (state === 'unreachable') {
        notice.replaceChildren(`Map tiles unreachable (${host}): vehicles on a plain background. `);
        const retry = document.createElement('button');
        retry.type = 'button';
        retry.className = 'link';
        retry.textContent = 'retry';
        retry.addEventListener('click', () => {
          notice.hidden = true;
          base.retry();
        });
        notice.append(retry);
        notice.hidden = false;
      } else if (state === 'none') {
        notice.textContent = 'No map tiles configured: plain background.';
        notice.hidden = false;
      } else {
        notice.hidden = true;
      }
    },
  });

  const sidebar = new Sidebar(fleet, {
    onFilter: (filter) => fleet.setFilter(filter),
    onCluster: (on) => layer.setCluster(on),
    onTrails: (mode) => layer.setTrailMode(mode),
    onPick: (id) => {
      layer.focus(id);
      layer.select(id);
    },
  });
  const pipeline = new PipelinePanel();
  commands.loadTypes();
  // Fences under the vehicles; the feed of their events (and alerts) in the sidebar.
  const fences = new GeofenceLayer(map, api);
  fences.load();
  const feed = new EventFeed(api, {
    nameOf: (id) => fences.nameOf(id),
    onPick: (id) => {
      if (!fleet.get(id)) return;
      layer.focus(id);
      layer.select(id);
    },
  });
  feed.load();

  map.on('moveend', () => writeHash(map, layer.selected));
  document.addEventListener('keydown', (e) => {
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement;
    if (e.key === 'Escape' && !typing && layer.selected) layer.select(null);
  });
  window.addEventListener('hashchange', () => {
    const view = readHash();
    if (!view) return;
    map.setView(view.center, view.zoom);
    if (view.vehicle && fleet.get(view.vehicle)) layer.select(view.vehicle);
  });

  // Without a view in the address bar, frame the fleet once its first positions are known.
  let fitted = Boolean(initial);
  const fitOnce = () => {
    if (fitted) return;
    const points = [];
    for (const v of fleet.vehicles.values()) if (v.hasPos) points.push([v.lat, v.lng]);
    if (!points.length) return;
    fitted = true;
    map.fitBounds(L.latLngBounds(points), {padding: [24, 24], maxZoom: 15, animate: false});
  };
  stream = new Stream(streamUrl(), {
    onState: (status) => {
      connection.show(status);
      map.getContainer().classList.toggle('stale', status.state !== 'live');
    },
    checkAuth: async () => {
      try {
        await api.stats();
        return true;
      } catch (err) {
        return !(err instanceof ApiError && err.status === 401);
      }
    },
    onFrame: (frame) => {
      switch (frame.type) {
        case 'snapshot':
          fleet.applySnapshot(frame.vehicles);
          fitOnce();
          if (initial && initial.vehicle && fleet.get(initial.vehicle) && !layer.selected) layer.select(initial.vehicle);
          break;
        case 'diff':
          fleet.applyDiff(frame.vehicles, frame.removed);
          fitOnce();
          break;
        case 'stats':
          sidebar.showStats(frame);
          pipeline.show(frame);
          break;
        case 'command':
          commands.update(frame.command);
          break;
        case 'event':
          feed.add(frame.event);
          break;
        default:
          break; // ping, and frame types newer than this page
      }
    },
  });
  stream.start();
  window.addEventListener('pagehide', () => stream.stop());
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) stream.start(); // back from the browser's page cache
  });
}

main().catch((err) => {
  showFatal(`The console page failed to start: ${err && err.message ? err.message : err}`);
  throw err;
});
