// Geofences on the map and in the sidebar: drawn from /api/geofences, and (where the console
// may write the stack's geofence file) created, reshaped, renamed and deleted with
// leaflet-geoman. Every change goes through the API, which validates the whole file and
// writes it atomically; the map then shows what the file holds, never an unsaved guess.

import {ApiError} from './api.js';
import {byId, el, setText} from './dom.js';

const L = window.L;
const STYLE = {color: '#0c5ac8', weight: 2, fillOpacity: 0.08};
const RESTRICTED = {color: '#c0392b', weight: 2, fillOpacity: 0.1};

function styleFor(feature) {
  const tags = (feature.properties && feature.properties.tags) || [];
  return tags.includes('restricted') ? RESTRICTED : STYLE;
}

function tagsOf(text) {
  return text.split(',').map((t) => t.trim()).filter(Boolean);
}

export class GeofenceLayer {
  /**
   * @param {L.Map} map
   * @param {import('./api.js').Api} api
   */
  constructor(map, api) {
    this.map = map;
    this.api = api;
    this.list = byId('g-list');
    this.form = byId('g-form');
    this.nameInput = byId('g-name');
    this.tagsInput = byId('g-tags');
    this.message = byId('g-msg');
    this.note = byId('g-note');
    this.features = [];
    this.writable = false;
    this.pending = null; // a drawn polygon waiting for its name (a Leaflet layer)
    this.editing = null; // the id of the fence being renamed
    this.group = L.geoJSON(null, {
      style: styleFor,
      onEachFeature: (feature, layer) => {
        layer.feature = feature;
        layer.bindTooltip(feature.properties && feature.properties.name ? feature.properties.name : feature.id,
          {sticky: true, className: 'fence-tip'});
        layer.on('pm:edit', () => this.reshape(feature, layer));
      },
    }).addTo(map);
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.save();
    });
    byId('g-cancel').addEventListener('click', () => this.cancel());
  }

  /** A fence's name (its id when unknown, e.g. deleted since). */
  nameOf(id) {
    const feature = this.features.find((f) => f.id === id);
    return feature && feature.properties && feature.properties.name ? feature.properties.name : id;
  }

  async load() {
    let doc;
    try {
      doc = await this.api.geofences();
    } catch (err) {
      this.show(err instanceof ApiError ? err.message : String(err), true);
      return;
    }
    this.features = doc.features || [];
    this.writable = Boolean(doc.writable);
    this.group.clearLayers();
    this.group.addData(this.features);
    this.render();
    this.enableDrawing();
  }

  enableDrawing() {
    if (!this.writable || !this.map.pm || this.drawing) return;
    this.drawing = true;
    this.map.pm.addControls({
      position: 'topleft', drawMarker: false, drawCircleMarker: false, drawPolyline: false, drawCircle: false,
      drawText: false, cutPolygon: false, rotateMode: false, dragMode: false,
      drawPolygon: true, drawRectangle: true, editMode: true, removalMode: true,
    });
    this.map.pm.setGlobalOptions({allowSelfIntersection: false, snappable: false});
    this.map.on('pm:create', (e) => this.drawn(e.layer));
    this.map.on('pm:remove', (e) => {
      if (e.layer.feature && e.layer.feature.id) this.remove(e.layer.feature.id);
    });
  }

  render() {
    setText(this.note, this.writable ? 'Draw a polygon on the map (toolbar, top left) to add one.'
      : 'Read-only here: change config/geofences.geojson with `ecokit geofences import`.');
    if (!this.features.length) {
      this.list.replaceChildren(el('li', {class: 'muted'}, 'none'));
      return;
    }
    this.list.replaceChildren(...this.features.map((f) => {
      const props = f.properties || {};
      const row = el('li', {class: 'fence-row', dataset: {id: f.id}},
        el('span', {class: 'fence-name'}, props.name || f.id),
        (props.tags || []).length ? el('span', {class: 'fence-tags muted small'}, props.tags.join(', ')) : null);
      if (this.writable) {
        row.append(
          el('button', {type: 'button', class: 'link', dataset: {action: 'rename'},
            onclick: () => this.rename(f)}, 'rename'),
          el('button', {type: 'button', class: 'link', dataset: {action: 'delete'},
            onclick: () => this.remove(f.id)}, 'delete'));
      }
      row.addEventListener('mouseenter', () => this.highlight(f.id, true));
      row.addEventListener('mouseleave', () => this.highlight(f.id, false));
      return row;
    }));
  }

  highlight(id, on) {
    this.group.eachLayer((layer) => {
      if (layer.feature && layer.feature.id === id) layer.setStyle({weight: on ? 4 : styleFor(layer.feature).weight});
    });
  }

  show(text, bad = false) {
    setText(this.message, text);
    this.message.classList.toggle('error', bad);
  }

  openForm(name, tags) {
    this.nameInput.value = name;
    this.tagsInput.value = tags.join(', ');
    this.form.hidden = false;
    this.nameInput.focus();
  }

  drawn(layer) {
    if (this.pending) this.map.removeLayer(this.pending);
    this.pending = layer;
    this.editing = null;
    this.show('');
    this.openForm('', []);
  }

  rename(feature) {
    this.editing = feature.id;
    this.show('');
    const props = feature.properties || {};
    this.openForm(props.name || feature.id, props.tags || []);
  }

  cancel() {
    if (this.pending) this.map.removeLayer(this.pending);
    this.pending = null;
    this.editing = null;
    this.form.hidden = true;
    this.show('');
  }

  async save() {
    const name = this.nameInput.value.trim();
    const tags = tagsOf(this.tagsInput.value);
    if (!name) {
      this.show('a name, please', true);
      return;
    }
    try {
      if (this.editing) {
        await this.api.patchGeofence(this.editing, {name, tags});
        this.show(`renamed to ${name}`);
      } else if (this.pending) {
        const feature = this.pending.toGeoJSON();
        feature.properties = {name, tags};
        const created = await this.api.createGeofence(feature);
        this.map.removeLayer(this.pending);
        this.show(`saved ${created.properties.name}`);
      }
    } catch (err) {
      // The polygon stays on the map so it can be fixed or cancelled.
      this.show(err instanceof ApiError ? err.message : String(err), true);
      return;
    }
    this.pending = null;
    this.editing = null;
    this.form.hidden = true;
    await this.load();
  }

  async reshape(feature, layer) {
    const geometry = layer.toGeoJSON().geometry;
    try {
      await this.api.replaceGeofence(feature.id, {type: 'Feature', properties: feature.properties, geometry});
      this.show(`reshaped ${feature.properties.name || feature.id}`);
    } catch (err) {
      this.show(err instanceof ApiError ? err.message : String(err), true);
    }
    await this.load();
  }

  async remove(id) {
    try {
      await this.api.deleteGeofence(id);
      this.show(`deleted ${id}`);
    } catch (err) {
      this.show(err instanceof ApiError ? err.message : String(err), true);
    }
    await this.load();
  }
}
