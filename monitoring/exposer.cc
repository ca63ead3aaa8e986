#include "monitoring/exposer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "monitoring/http_server.h"
#include "monitoring/text_format.h"

namespace prefill::monitoring {

absl::StatusOr<std::unique_ptr<Exposer>> Exposer::Create(const std::string& bind_address,
                                                         int num_threads) {
  std::unique_ptr<Exposer> exposer(new Exposer());
  Exposer* self = exposer.get();
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Create(bind_address, "metrics endpoint", num_threads,
                         [self](const HttpRequest& r) { return self->Handle(r); });
  if (!server.ok()) return server.status();
  exposer->server_ = *std::move(server);
  return exposer;
}

Exposer::~Exposer() = default;

void Exposer::RegisterCollectable(const std::weak_ptr<Collectable>& collectable) {
  absl::MutexLock lock(&mu_);
  collectables_.push_back(collectable);
}

void Exposer::RemoveCollectable(const std::weak_ptr<Collectable>& collectable) {
  absl::MutexLock lock(&mu_);
  const auto same = [&](const std::weak_ptr<Collectable>& c) {
    return !c.owner_before(collectable) && !collectable.owner_before(c);
  };
  collectables_.erase(std::remove_if(collectables_.begin(), collectables_.end(), same),
                      collectables_.end());
}

int Exposer::port() const { return server_->port(); }
const std::string& Exposer::host() const { return server_->host(); }
std::string Exposer::url() const {
  return absl::StrCat("http://", host(), ":", port(), "/metrics");
}

std::string Exposer::Scrape() const {
  std::vector<std::shared_ptr<Collectable>> live;
  {
    absl::MutexLock lock(&mu_);
    std::erase_if(collectables_, [](const std::weak_ptr<Collectable>& c) { return c.expired(); });
    for (const auto& c : collectables_) {
      if (auto locked = c.lock()) live.push_back(std::move(locked));
    }
  }
  std::vector<FamilySnapshot> families;
  for (const auto& c : live) {
    for (FamilySnapshot& f : c->Collect()) {
      auto same = std::find_if(families.begin(), families.end(),
                               [&](const FamilySnapshot& g) { return g.name == f.name; });
      if (same == families.end()) {
        families.push_back(std::move(f));
        continue;
      }
      // The same name from two collectables: one group, each label set once.
      if (same->type != f.type) continue;
      for (MetricSnapshot& m : f.metrics) {
        const bool seen =
            std::any_of(same->metrics.begin(), same->metrics.end(),
                        [&](const MetricSnapshot& x) { return x.labels == m.labels; });
        if (!seen) same->metrics.push_back(std::move(m));
      }
      std::sort(
          same->metrics.begin(), same->metrics.end(),
          [](const MetricSnapshot& a, const MetricSnapshot& b) { return a.labels < b.labels; });
    }
  }
  std::stable_sort(
      families.begin(), families.end(),
      [](const FamilySnapshot& a, const FamilySnapshot& b) { return a.name < b.name; });
  return SerializeText(families);
}

HttpResponse Exposer::Handle(const HttpRequest& request) const {
  if (request.path != "/metrics") {
    return {404, "text/plain; charset=utf-8", "Not found: metrics are served at /metrics\n", {}};
  }
  if (request.method != "GET" && request.method != "HEAD") {
    return {405, "text/plain; charset=utf-8", "Only GET and HEAD are allowed\n", {}};
  }
  return {200, kTextContentType, Scrape(), {}};
}

}  // namespace prefill::monitoring
