// The details of the selected vehicle: its latest state, a live speed/fuel chart seeded with
// the last hour of history, its device shadow (desired / reported / delta) and its commands.

import {SpeedFuelChart} from './chart.js';
import {byId, el, perFrame, setText} from './dom.js';
import {age, clock, coord, DASH, fixed, int} from './format.js';

const REFRESH_MS = 5000;

function section(title, value) {
  const body = value === undefined ? DASH : JSON.stringify(value, null, 2);
  return el('div', {class: 'shadow-part', dataset: {part: title}}, el('h4', {}, title), el('pre', {}, body));
}

export class VehiclePanel {
  constructor(api, fleet, commands, {onClose}) {
    this.api = api;
    this.fleet = fleet;
    this.commands = commands;
    this.root = byId('details');
    this.title = byId('d-title');
    this.status = byId('d-status');
    this.fields = byId('d-fields');
    this.chartNote = byId('d-chart-note');
    this.shadowBox = byId('d-shadow');
    this.desired = byId('d-desired');
    this.shadowMsg = byId('d-shadow-msg');
    this.chart = new SpeedFuelChart(byId('d-chart'));
    this.id = null;
    this.extra = {};
    this.history = null;
    this.timer = null;

    byId('d-close').addEventListener('click', () => onClose());
    byId('d-shadow-refresh').addEventListener('click', () => this.loadShadow());
    byId('d-shadow-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.submitDesired();
    });
    this.renderSoon = perFrame(() => this.render());
    fleet.subscribe((changed) => {
      if (!this.id) return;
      if (changed !== null && !changed.includes(this.id)) return;
      const v = this.fleet.get(this.id);
      if (v) this.chart.push(v.ts, v.speed, v.fuel);
      this.renderSoon();
    });
    window.addEventListener('resize', () => this.chart.resize());
  }

  async open(id) {
    if (this.id === id) return;
    this.close(false);
    this.id = id;
    this.extra = {};
    this.root.hidden = false;
    this.root.dataset.vehicle = id;
    setText(this.title, id);
    this.shadowBox.replaceChildren(el('p', {class: 'muted'}, 'loading…'));
    this.shadowMsg.textContent = '';
    this.render();
    this.commands.setVehicle(id);
    this.loadHistory(id);
    this.loadShadow();
    this.loadDetails();
    this.timer = setInterval(() => {
      this.loadDetails();
      this.loadShadow();
      this.render();
    }, REFRESH_MS);
  }

  close(notify = true) {
    clearInterval(this.timer);
    if (this.history) this.history.abort();
    this.history = null;
    this.id = null;
    this.root.hidden = true;
    delete this.root.dataset.vehicle;
    this.chart.destroy();
    this.chartNote.textContent = '';
    if (notify) this.commands.setVehicle(null);
  }

  async loadHistory(id) {
    const controller = new AbortController();
    this.history = controller;
    setText(this.chartNote, 'loading the last hour…');
    this.chartNote.dataset.state = 'loading';
    let points = [];
    let note;
    try {
      const body = await this.api.history(id, {signal: controller.signal});
      points = Array.isArray(body && body.points) ? body.points : [];
      note = `${points.length} points from history${body && body.downsampled ? ' (downsampled)' : ''}, live since`;
    } catch (err) {
      if (err.name === 'AbortError' || this.id !== id) return;
      note = `history unavailable (${err.message}); live since`;
    }
    if (this.id !== id) return;
    // Fixes that arrived while the history loaded come after it (push() skips older ones).
    const v = this.fleet.get(id);
    this.chart.seed(points);
    if (v) this.chart.push(v.ts, v.speed, v.fuel);
    this.chartNote.dataset.state = 'ready';
    this.chartNote.dataset.points = String(points.length);
    setText(this.chartNote, `${note} ${clock(Date.now())}`);
  }

  async loadDetails() {
    const id = this.id;
    try {
      const full = await this.api.vehicle(id);
      if (this.id === id && full) {
        this.extra = full;
        this.render();
      }
    } catch (err) {
      if (this.id === id && err.status === 404) this.extra = {gone: true};
    }
  }

  async loadShadow() {
    const id = this.id;
    if (!id) return;
    let nodes;
    try {
      const doc = await this.api.shadow(id);
      const state = (doc && doc.state) || {};
      nodes = [
        section('desired', state.desired), section('reported', state.reported), section('delta', state.delta),
        el('p', {class: 'muted small'}, `version ${doc && doc.version !== undefined ? doc.version : DASH}`,
          doc && doc.timestamp ? ` · updated ${clock(doc.timestamp * 1000)}` : ''),
      ];
    } catch (err) {
      nodes = [el('p', {class: 'muted'}, err.status === 404 ? 'no shadow for this vehicle yet' : `shadow unavailable: ${err.message}`)];
    }
    if (this.id === id) this.shadowBox.replaceChildren(...nodes);
  }

  async submitDesired() {
    const id = this.id;
    let desired;
    try {
      desired = JSON.parse(this.desired.value);
    } catch (err) {
      this.formMessage(`not JSON: ${err.message}`, true);
      return;
    }
    if (!desired || typeof desired !== 'object' || Array.isArray(desired)) {
      this.formMessage('desired must be a JSON object, e.g. {"publish_interval": 5}', true);
      return;
    }
    try {
      const doc = await this.api.updateDesired(id, desired);
      this.formMessage(`accepted, version ${doc && doc.version !== undefined ? doc.version : '?'}`, false);
    } catch (err) {
      this.formMessage(err.message, true);
    }
    this.loadShadow();
  }

  formMessage(text, error) {
    this.shadowMsg.textContent = text;
    this.shadowMsg.classList.toggle('error', error);
  }

  render() {
    const id = this.id;
    if (!id) return;
    const v = this.fleet.get(id) || {};
    const x = this.extra;
    const status = v.status || x.status || 'unknown';
    setText(this.status, status);
    this.status.className = `badge s-${status}`;
    this.root.dataset.status = status;
    const rows = [
      ['position', v.lat !== undefined ? `${coord(v.lat)}, ${coord(v.lng)}` : DASH],
      ['speed', fixed(v.speed, 0, 'km/h')],
      ['derived speed', fixed(x.derived_speed, 0, 'km/h')],
      ['heading', fixed(v.heading, 0, '°')],
      ['fuel', fixed(v.fuel, 1, '%')],
      ['odometer', fixed(x.odometer, 1, 'km')],
      ['engine', x.engine === true ? 'on' : x.engine === false ? 'off' : DASH],
      ['last fix', v.ts ? `${clock(v.ts)} (${age(v.ts)})` : DASH],
      ['last seen', x.last_seen || v.ts ? age(Math.max(x.last_seen || 0, v.ts || 0)) : DASH],
      ['sequence', int(x.seq)],
    ];
    // Built once, then only the texts that changed: a fix a second must not re-lay-out the panel.
    if (!this.cells) {
      this.cells = new Map();
      const nodes = [];
      for (const [key] of rows) {
        const cell = el('dd', {dataset: {field: key}});
        this.cells.set(key, cell);
        nodes.push(el('dt', {}, key), cell);
      }
      this.fields.replaceChildren(...nodes);
    }
    for (const [key, value] of rows) setText(this.cells.get(key), value);
  }
}
