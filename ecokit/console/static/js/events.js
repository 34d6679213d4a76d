// The event feed: geofence enters and exits and alerts from the fleet processor, newest first.
// The latest come from /api/events when the page opens, then from the stream's event frames.

import {byId, el} from './dom.js';
import {clock} from './format.js';

const MAX = 50;

function minutes(seconds) {
  if (typeof seconds !== 'number') return '';
  return seconds < 120 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

/** What happened, in words: "entered Depot north", "overspeed firing (142)". ``nameOf`` gives
 * a fence's name from its id (alerts carry only the id). */
export function describe(event, nameOf = (id) => id) {
  if (event.kind === 'geofence') {
    const where = event.name || event.geofence;
    if (event.type === 'geofence_enter') return `entered ${where}`;
    const dwell = minutes(event.dwell_s);
    return `left ${where}${dwell ? ` after ${dwell}` : ''}`;
  }
  const value = typeof event.value === 'number' ? ` (${event.value})` : '';
  const zone = event.geofence ? ` in ${nameOf(event.geofence)}` : '';
  return `${event.alert} ${event.state}${value}${zone}`;
}

export class EventFeed {
  constructor(api, {onPick, nameOf} = {}) {
    this.api = api;
    this.onPick = onPick || (() => {});
    this.nameOf = nameOf || ((id) => id);
    this.list = byId('e-list');
    this.items = [];
    this.seen = new Set();
  }

  async load() {
    try {
      const doc = await this.api.events(MAX);
      // Oldest first, so add() keeps the newest on top.
      for (const event of (doc.items || []).slice().reverse()) this.add(event, false);
    } catch {
      // The feed fills from the stream anyway.
    }
    this.render();
  }

  add(event, render = true) {
    const key = `${event.kind}|${event.vehicle}|${event.type || event.alert}|${event.geofence || ''}|${event.ts}|${event.state || ''}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.items.unshift(event);
    if (this.items.length > MAX) this.items.length = MAX;
    if (render) this.render();
  }

  render() {
    if (!this.items.length) {
      this.list.replaceChildren(el('li', {class: 'muted'}, 'none yet'));
      return;
    }
    this.list.replaceChildren(...this.items.map((e) => {
      const severity = e.kind === 'alert' ? (e.state === 'resolved' ? 'resolved' : e.severity || 'warning') : 'zone';
      return el('li', {class: `event ev-${severity}`,
        dataset: {kind: e.kind, vehicle: e.vehicle, geofence: e.geofence || '', type: e.type || e.state || ''}},
      el('time', {class: 'muted small'}, clock(e.ts)),
      el('button', {type: 'button', class: 'link ev-vehicle', onclick: () => this.onPick(e.vehicle)}, e.vehicle),
      el('span', {class: 'ev-text'}, describe(e, this.nameOf)));
    }));
  }
}
