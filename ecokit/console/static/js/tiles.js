// The base map. The tile URL and attribution come from the console's configuration; an
// offline machine (or a blocked tile server) must still show the fleet, so when tiles cannot
// be loaded the tile layer is removed, a notice says so, and the vehicles stay on a plain
// background with a latitude/longitude grid.

const L = window.L;
const FAILURES_BEFORE_GIVING_UP = 3; // tiles failed with none loaded: the server is unreachable
const FIRST_TILE_TIMEOUT_MS = 10000;

export class BaseMap {
  /**
   * @param {L.Map} map
   * @param {{url?: string, attribution?: string, max_zoom?: number, subdomains?: string}|null} tiles
   * @param {{onState(state: 'tiles'|'unreachable'|'none', host: string): void}} callbacks
   */
  constructor(map, tiles, {onState}) {
    this.map = map;
    this.tiles = tiles && tiles.url ? tiles : null;
    this.onState = onState;
    this.layer = null;
    this.timer = null;
    this.host = '';
    if (!this.tiles) {
      onState('none', '');
      return;
    }
    try {
      this.host = new URL(this.tiles.url.replace(/\{s\}/g, 'a').replace(/[{}]/g, ''), document.baseURI).host;
    } catch {
      this.host = this.tiles.url;
    }
    this.connect();
  }

  connect() {
    const t = this.tiles;
    const options = {attribution: t.attribution || '', maxZoom: t.max_zoom || 19, detectRetina: false};
    if (t.subdomains) options.subdomains = t.subdomains;
    this.loaded = 0;
    this.failed = 0;
    this.layer = L.tileLayer(t.url, options);
    this.layer.on('tileload', () => {
      this.loaded += 1;
      this.failed = 0;
      if (this.loaded === 1) {
        clearTimeout(this.timer);
        this.onState('tiles', this.host);
      }
    });
    this.layer.on('tileerror', () => {
      this.failed += 1;
      if (this.failed >= FAILURES_BEFORE_GIVING_UP && this.loaded === 0) this.giveUp();
    });
    this.layer.addTo(this.map);
    this.timer = setTimeout(() => {
      if (this.loaded === 0) this.giveUp();
    }, FIRST_TILE_TIMEOUT_MS);
  }

  giveUp() {
    clearTimeout(this.timer);
    if (!this.layer) return;
    this.map.removeLayer(this.layer);
    this.layer = null;
    this.onState('unreachable', this.host);
  }

  /** Try the tile server again (the notice's "retry" button). */
  retry() {
    if (!this.tiles || this.layer) return;
    this.connect();
  }
}
