// The REST client. Same origin, authenticated by the console cookie the server set when the
// page was opened with ?token=; every path is relative so the console also works behind a
// reverse proxy under a sub-path.

export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export class Api {
  constructor(base = document.baseURI) {
    this.base = base;
    this.onUnauthorized = () => {};
  }

  url(path, params = {}) {
    const url = new URL(path, this.base);
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
    }
    return url;
  }

  async request(method, path, {params, body, signal} = {}) {
    const init = {method, credentials: 'same-origin', headers: {Accept: 'application/json'}, signal};
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(this.url(path, params), init);
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'unreachable', 'console unreachable');
    }
    let payload = null;
    const text = await response.text();
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch {
        payload = null;
      }
    }
    if (response.status === 401) this.onUnauthorized();
    if (!response.ok) {
      const error = payload && payload.error ? payload.error : {};
      throw new ApiError(response.status, error.code || `http_${response.status}`,
        error.message || `${method} ${path}: HTTP ${response.status}`, error.field || null);
    }
    return payload;
  }

  get(path, params, options = {}) {
    return this.request('GET', path, {...options, params});
  }

  post(path, body) {
    return this.request('POST', path, {body});
  }

  patch(path, body, params) {
    return this.request('PATCH', path, {body, params});
  }

  put(path, body) {
    return this.request('PUT', path, {body});
  }

  delete(path) {
    return this.request('DELETE', path);
  }

  // The console's endpoints (docs/console.md).
  config() { return this.get('api/config'); }
  stats() { return this.get('api/stats'); }
  vehicle(id) { return this.get(`api/vehicles/${encodeURIComponent(id)}`); }
  history(id, options = {}) {
    return this.get(`api/vehicles/${encodeURIComponent(id)}/history`, {since: '1h', max_points: 500}, options);
  }
  shadow(thing) { return this.get(`api/shadows/${encodeURIComponent(thing)}`); }
  updateDesired(thing, desired) { return this.patch(`api/shadows/${encodeURIComponent(thing)}`, {desired}); }
  commandTypes() { return this.get('api/command-types'); }
  commands(vehicle, limit = 10) { return this.get('api/commands', {vehicle, limit}); }
  sendCommand(vehicle, command, args = {}) { return this.post('api/commands', {vehicle, command, args}); }
  geofences() { return this.get('api/geofences'); }
  createGeofence(feature) { return this.post('api/geofences', feature); }
  replaceGeofence(id, feature) { return this.put(`api/geofences/${encodeURIComponent(id)}`, feature); }
  patchGeofence(id, changes) { return this.patch(`api/geofences/${encodeURIComponent(id)}`, changes); }
  deleteGeofence(id) { return this.delete(`api/geofences/${encodeURIComponent(id)}`); }
  events(limit = 50) { return this.get('api/events', {limit}); }
}
