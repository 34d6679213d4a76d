// Swagger UI for the console's OpenAPI document. "Try it out" calls carry the page's cookie
// (same origin); scripts use "Authorize" with the console token.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
