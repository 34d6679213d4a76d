// The left sidebar: fleet counters (from the server's stats frames), status and fuel filters,
// clustering and trail options, and the search by vehicle id.

import {byId, el, setText, throttle} from './dom.js';
import {int, measure, millis} from './format.js';

export class Sidebar {
  constructor(fleet, {onFilter, onCluster, onTrails, onPick}) {
    this.fleet = fleet;
    this.onPick = onPick;
    this.counters = {
      active: byId('c-active'), moving: byId('c-moving'), idle: byId('c-idle'), parked: byId('c-parked'),
      offline: byId('c-offline'), total: byId('c-total'), rate: byId('c-rate'), latency: byId('c-latency'),
      latencyP95: byId('c-latency-p95'),
    };
    this.shown = byId('shown-count');
    this.known = byId('known-count');
    this.search = byId('search');
    this.results = byId('search-results');

    const statusBoxes = [...document.querySelectorAll('input[name="status"]')];
    const minFuel = byId('min-fuel');
    const minFuelOut = byId('min-fuel-out');
    const applyFilter = () => {
      const statuses = statusBoxes.filter((box) => box.checked).map((box) => box.value);
      // 'unknown' (no status yet) follows the offline box: both mean "not reporting normally".
      if (statuses.includes('offline')) statuses.push('unknown');
      const fuel = Number(minFuel.value);
      setText(minFuelOut, `${fuel} %`);
      onFilter({statuses, minFuel: fuel});
    };
    for (const box of statusBoxes) box.addEventListener('change', applyFilter);
    minFuel.addEventListener('input', applyFilter);
    byId('opt-cluster').addEventListener('change', (e) => onCluster(e.target.checked));
    byId('opt-trails').addEventListener('change', (e) => onTrails(e.target.value));

    this.search.addEventListener('input', () => this.renderResults());
    this.search.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        const first = this.fleet.search(this.search.value, 1)[0];
        if (first) this.onPick(first);
      } else if (e.key === 'Escape') {
        this.search.value = '';
        this.renderResults();
      }
    });
    // The search results and the "N of M on the map" line follow the fleet, twice a second at most.
    this.refresh = throttle(() => {
      setText(this.shown, int(this.fleet.countVisible()));
      setText(this.known, int(this.fleet.vehicles.size));
      if (this.search.value) this.renderResults();
    }, 500);
    fleet.subscribe(() => this.refresh());
  }

  /** A stats frame (the body of GET /api/stats). */
  showStats(stats) {
    const v = (stats && stats.vehicles) || {};
    const c = this.counters;
    setText(c.active, int(v.active));
    setText(c.moving, int(v.moving));
    setText(c.idle, int(v.idle));
    setText(c.parked, int(v.parked));
    setText(c.offline, int(v.offline));
    setText(c.total, int(v.total));
    const m = (stats && stats.messages) || {};
    setText(c.rate, measure(m.rate, ''));
    const lat = (stats && stats.latency_ms) || {};
    setText(c.latency, millis(lat.avg));
    setText(c.latencyP95, millis(lat.p95));
  }

  renderResults() {
    const ids = this.fleet.search(this.search.value);
    const key = `${this.search.value.trim()}\n${ids.join('\n')}`;
    if (key === this.lastResults) {
      // Same matches: only their status dots change. Rebuilding the list twice a second would
      // swap the buttons under the pointer and lose the click.
      for (const dot of this.results.querySelectorAll('button.result')) {
        const v = this.fleet.get(dot.dataset.id);
        if (v) dot.firstElementChild.className = `dot s-${v.status}`;
      }
      return;
    }
    this.lastResults = key;
    const items = ids.map((id) => {
      const v = this.fleet.get(id);
      return el('li', {},
        el('button', {type: 'button', class: 'result', dataset: {id}, onclick: () => this.onPick(id)},
          el('i', {class: `dot s-${v.status}`}), id));
    });
    if (this.search.value.trim() && !ids.length) items.push(el('li', {class: 'muted'}, 'no vehicle matches'));
    this.results.replaceChildren(...items);
  }
}
