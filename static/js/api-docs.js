// The API reference page: Swagger UI (vendored, loaded before this module) over /schema/openapi.json.
// "Try it out" sends the page's session cookie; writes add the CSRF header a browser session needs,
// unless the caller authorised with a Bearer token, which needs none.

const root = document.getElementById("api-reference");
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

window.SwaggerUIBundle({
  url: root.dataset.specUrl,
  domNode: root,
  deepLinking: true,
  displayRequestDuration: true,
  requestInterceptor(request) {
    if (!SAFE.has((request.method ?? "GET").toUpperCase()) && csrf) request.headers["x-csrftoken"] = csrf;
    return request;
  },
});
