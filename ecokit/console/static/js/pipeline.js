// The pipeline panel: is the bridge up, its write rate, what it holds back (buffered on disk,
// dropped), and the dead letters by reason. From the `pipeline` part of the stats frames.

import {byId, el, setText} from './dom.js';
import {DASH, int, measure} from './format.js';

export class PipelinePanel {
  constructor() {
    this.up = byId('p-up');
    this.rate = byId('p-rate');
    this.buffered = byId('p-buffered');
    this.dropped = byId('p-dropped');
    this.dead = byId('p-dead');
    this.lastDead = '';
  }

  show(stats) {
    const bridge = (stats && stats.pipeline && stats.pipeline.bridge) || {};
    const up = bridge.up;
    setText(this.up, up === true ? 'up' : up === false ? 'down' : DASH);
    this.up.dataset.state = up === true ? 'up' : up === false ? 'down' : 'unknown';
    setText(this.rate, measure(bridge.rate, 'points/s'));
    setText(this.buffered, int(bridge.buffered));
    setText(this.dropped, int(bridge.dropped));
    this.dropped.classList.toggle('warn', typeof bridge.dropped === 'number' && bridge.dropped > 0);

    const dead = bridge.dead_letters && typeof bridge.dead_letters === 'object' ? bridge.dead_letters : {};
    const key = JSON.stringify(dead);
    if (key === this.lastDead) return;
    this.lastDead = key;
    const rows = Object.entries(dead)
      .filter(([, n]) => typeof n === 'number')
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .map(([reason, n]) => el('tr', {dataset: {reason}}, el('th', {scope: 'row'}, reason), el('td', {}, int(n))));
    if (!rows.length) rows.push(el('tr', {}, el('td', {class: 'muted'}, 'none')));
    this.dead.replaceChildren(...rows);
  }
}
