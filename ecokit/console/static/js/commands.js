// Command buttons of the selected vehicle, and its commands with their state shown in place:
// queued -> sent -> delivered -> succeeded | failed | timed_out | expired, updated by the
// `command` frames of the stream (the answer users of other consoles miss).

import {el} from './dom.js';
import {clock, fixed} from './format.js';

const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'expired']);
// Commands that stop a vehicle ask for a second click (Traccar users fire immobilisers by mistake).
const CONFIRM = new Set(['engine_stop']);
const CONFIRM_MS = 4000;
const KEEP = 500;

function label(name) {
  return name.replace(/_/g, ' ');
}

export class CommandsPanel {
  constructor(api, buttons, list) {
    this.api = api;
    this.buttons = buttons;
    this.list = list;
    this.types = [];
    this.vehicle = null;
    this.commands = new Map(); // id -> Command, the latest state seen (bounded)
  }

  async loadTypes() {
    try {
      const body = await this.api.commandTypes();
      this.types = Array.isArray(body && body.items) ? body.items : [];
    } catch (err) {
      this.types = [];
      this.buttons.replaceChildren(el('p', {class: 'error'}, `command types unavailable: ${err.message}`));
      return;
    }
    this.renderButtons();
  }

  async setVehicle(id) {
    this.vehicle = id;
    this.renderButtons();
    this.list.replaceChildren();
    if (!id) return;
    try {
      const body = await this.api.commands(id, 10);
      if (this.vehicle !== id) return;
      const items = Array.isArray(body && body.items) ? body.items : [];
      // Newest first from the API; keep the newer state if a frame already arrived.
      for (const cmd of items.reverse()) this.update(cmd);
    } catch (err) {
      if (this.vehicle === id) this.list.prepend(el('li', {class: 'error'}, `commands: ${err.message}`));
    }
  }

  renderButtons() {
    const nodes = [];
    for (const type of this.types) {
      if (!type || typeof type.name !== 'string') continue;
      const inputs = [];
      for (const [arg, kind] of Object.entries(type.args || {})) {
        const input = el('input', {type: kind === 'number' || kind === 'float' || kind === 'int' ? 'number' : 'text',
          name: arg, placeholder: arg, 'aria-label': `${type.name} ${arg}`, step: 'any', class: 'cmd-arg',
          dataset: {arg, kind: String(kind)}});
        inputs.push(input);
      }
      const button = el('button', {type: 'button', class: 'cmd', title: type.description || '',
        dataset: {command: type.name}, disabled: !this.vehicle}, label(type.name));
      button.addEventListener('click', () => this.onButton(type, button, inputs));
      nodes.push(el('div', {class: 'cmd-group'}, ...inputs, button));
    }
    this.buttons.replaceChildren(...nodes);
  }

  onButton(type, button, inputs) {
    if (CONFIRM.has(type.name) && button.dataset.armed !== 'true') {
      button.dataset.armed = 'true';
      button.textContent = `confirm ${label(type.name)}`;
      setTimeout(() => {
        button.dataset.armed = 'false';
        button.textContent = label(type.name);
      }, CONFIRM_MS);
      return;
    }
    button.dataset.armed = 'false';
    button.textContent = label(type.name);
    const args = {};
    for (const input of inputs) {
      if (input.value === '') continue;
      const numeric = input.type === 'number';
      args[input.dataset.arg] = numeric ? Number(input.value) : input.value;
    }
    this.send(type.name, args, button);
  }

  async send(name, args, button) {
    const vehicle = this.vehicle;
    if (!vehicle) return;
    button.disabled = true;
    try {
      const body = await this.api.sendCommand(vehicle, name, args);
      for (const cmd of (body && body.items) || []) this.update(cmd);
    } catch (err) {
      const field = err.field ? ` (${err.field})` : '';
      this.list.prepend(el('li', {class: 'cmd-row error', dataset: {state: 'rejected'}},
        el('span', {class: 'cmd-name'}, label(name)), ' ', el('span', {class: 'cmd-state'}, 'rejected'),
        el('div', {class: 'cmd-detail'}, `${err.message}${field}`)));
    } finally {
      button.disabled = !this.vehicle;
    }
  }

  /** A Command from the API or a `command` frame: store it and show its newest state in place. */
  update(cmd) {
    if (!cmd || typeof cmd.id !== 'string') return;
    const known = this.commands.get(cmd.id);
    let latest = cmd;
    if (known && (known.updated || 0) > (cmd.updated || 0)) {
      latest = known; // a late, older state (or the list loaded after a frame arrived)
    } else {
      this.commands.set(cmd.id, cmd);
      if (this.commands.size > KEEP) this.commands.delete(this.commands.keys().next().value);
    }
    if (latest.vehicle !== this.vehicle) return;
    const row = this.row(latest);
    const existing = this.list.querySelector(`li[data-command-id="${CSS.escape(latest.id)}"]`);
    if (existing) existing.replaceWith(row);
    else this.list.prepend(row);
    while (this.list.children.length > 20) this.list.lastElementChild.remove();
  }

  row(cmd) {
    const state = String(cmd.state || 'unknown');
    const steps = Array.isArray(cmd.history) ? cmd.history.map((h) => h.state).join(' → ') : state;
    const bits = [];
    if (typeof cmd.latency_ms === 'number') bits.push(fixed(cmd.latency_ms, 0, 'ms'));
    if (cmd.result) bits.push(String(cmd.result));
    if (cmd.detail) bits.push(String(cmd.detail));
    const args = cmd.args && Object.keys(cmd.args).length
      ? ` ${Object.entries(cmd.args).map(([k, v]) => `${k}=${v}`).join(' ')}` : '';
    return el('li', {class: `cmd-row${FINAL.has(state) ? ' final' : ''}`,
      dataset: {commandId: cmd.id, state, command: String(cmd.command)}},
    el('span', {class: 'cmd-name'}, `${label(String(cmd.command))}${args}`), ' ',
    el('span', {class: `cmd-state st-${state}`, 'data-testid': 'command-state'}, label(state)), ' ',
    el('time', {class: 'muted small'}, clock(cmd.updated || cmd.created)),
    el('div', {class: 'cmd-steps muted small'}, steps),
    bits.length ? el('div', {class: 'cmd-detail'}, bits.join(' · ')) : null);
  }
}
