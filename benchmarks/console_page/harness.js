// Renderer comparison for benchmarks/console_page.py: the same synthetic fleet (N vehicles in
// Paris, each reporting once a second, delivered in 250 ms batches like the console's diffs)
// drawn either by the page's canvas layer or by Leaflet.markercluster with one DOM marker per
// vehicle (the usual Leaflet way; ThingsBoard's map).
// ?renderer=canvas|markercluster&n=5000&zoom=12[&cluster=0][&trails=all|none] (the last two: canvas only)

import {Fleet} from '/static/js/fleet.js';
import {VehicleLayer} from '/static/js/vehicle-layer.js';

const L = window.L;
const params = new URLSearchParams(location.search);
const renderer = params.get('renderer') || 'canvas';
const n = Number(params.get('n') || 5000);
const zoom = Number(params.get('zoom') || 12);
const cluster = params.get('cluster') !== '0';
const trailMode = params.get('trails') || 'selected';
const BOX = {south: 48.815, west: 2.225, north: 48.902, east: 2.470};

// A deterministic generator (mulberry32), so both renderers see the same fleet.
let seed = 42;
function rand() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const vehicles = [];
for (let i = 0; i < n; i += 1) {
  const moving = rand() < 0.75;
  vehicles.push({
    id: `vehicle-${String(i + 1).padStart(4, '0')}`,
    lat: BOX.south + rand() * (BOX.north - BOX.south),
    lng: BOX.west + rand() * (BOX.east - BOX.west),
    heading: Math.floor(rand() * 4) * 90,
    speed: moving ? 20 + rand() * 60 : 0,
    status: moving ? 'moving' : 'parked',
    fuel: 20 + rand() * 80,
    ts: Date.now(),
  });
}

function step(v) {
  if (rand() < 0.05) v.heading = (v.heading + (rand() < 0.5 ? 90 : 270)) % 360;
  const metres = v.speed / 3.6;
  const a = (v.heading * Math.PI) / 180;
  v.lat += (Math.cos(a) * metres) / 111320;
  v.lng += (Math.sin(a) * metres) / (111320 * Math.cos((v.lat * Math.PI) / 180));
  if (v.lat < BOX.south || v.lat > BOX.north || v.lng < BOX.west || v.lng > BOX.east) v.heading = (v.heading + 180) % 360;
  v.ts = Date.now();
  return {id: v.id, lat: v.lat, lng: v.lng, ts: v.ts, speed: v.speed, heading: v.heading, status: v.status, fuel: v.fuel};
}

const map = L.map('map', {center: [(BOX.south + BOX.north) / 2, (BOX.west + BOX.east) / 2], zoom, zoomSnap: 0.5, maxZoom: 19});
let apply;
if (renderer === 'markercluster') {
  const group = L.markerClusterGroup({chunkedLoading: true});
  const markers = new Map();
  const icons = {
    moving: L.divIcon({className: 'bench-marker moving', iconSize: [12, 12]}),
    parked: L.divIcon({className: 'bench-marker parked', iconSize: [12, 12]}),
  };
  group.addLayers(vehicles.map((v) => {
    const m = L.marker([v.lat, v.lng], {icon: icons[v.status]});
    markers.set(v.id, m);
    return m;
  }));
  map.addLayer(group);
  // markercluster moves a marker between clusters on its `move` event (remove + add).
  apply = (batch) => {
    for (const item of batch) markers.get(item.id).setLatLng([item.lat, item.lng]);
  };
} else {
  const fleet = new Fleet({trailPoints: 20});
  new VehicleLayer(map, fleet, {cluster, trailMode});
  fleet.applySnapshot(vehicles.map((v) => ({...v})));
  apply = (batch) => fleet.applyDiff(batch, []);
}

let tick = 0;
setInterval(() => {
  const batch = [];
  for (let i = tick % 4; i < vehicles.length; i += 4) {
    if (vehicles[i].status === 'moving') batch.push(step(vehicles[i]));
  }
  tick += 1;
  apply(batch);
}, 250);
document.body.dataset.ready = 'true';
