#pragma once
// A fake commercetools project for tests (auth and API on one 127.0.0.1 server with an
// ephemeral port), per shared/reference/apis.md: OAuth2 client credentials with expiring
// tokens, customers paged by `limit`/`offset` (500 / 10,000 caps) and by a `where`
// predicate on lastModifiedAt with an id tie-breaker, commercetools error bodies, fault
// injection, and the subscription messages a change would produce. Customers are kept in
// delta order, so a page costs O(limit + log n) with 100,000+ customers.
#include <boost/json.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/faults.h"

namespace weft::fakes {

struct CommercetoolsRequest {
  std::string method, path, query, authorization;
  int status = 0;  // 0: the connection was reset on purpose
};

class FakeCommercetools {
 public:
  FakeCommercetools(std::string project = "acme-shop", std::string client_id = "client-id",
                    std::string client_secret = "client-secret");
  ~FakeCommercetools();
  FakeCommercetools(const FakeCommercetools&) = delete;
  FakeCommercetools& operator=(const FakeCommercetools&) = delete;

  int port() const;
  std::string url() const;  // "http://127.0.0.1:PORT": both auth_url and api_url

  void set_faults(const Faults& f);  // applied to API requests (not to /oauth/token)
  void set_down(bool down);
  void set_token_lifetime(int seconds);  // default 172800
  void revoke_tokens();                  // every token issued so far answers 401 invalid_token

  // Creates the customer (version 1) or updates it (version + 1). lastModifiedAt advances
  // by one millisecond per change from 2024-01-01T00:00:00.000Z unless the object sets it
  // (so tests can make ties); createdAt is kept from the first version.
  boost::json::object put_customer(boost::json::object customer);
  // put_customer(sample_customer(i)) for i in [first, first + count), under one lock
  // (100,000 customers take a fraction of a second).
  void put_customers_bulk(int first, int count);
  bool delete_customer(const std::string& id);
  std::optional<boost::json::object> customer(const std::string& id) const;
  size_t customer_count() const;

  // The subscription notification for the customer's current version: notification_type
  // "Message" (with `message_type`, e.g. "CustomerCreated", which carries the customer),
  // "ResourceCreated", "ResourceUpdated" or "ResourceDeleted". With payload_not_included
  // the message says so instead of carrying the customer.
  boost::json::object notification(const std::string& id, const std::string& notification_type = "Message",
                                   const std::string& message_type = "CustomerCreated",
                                   bool payload_not_included = false) const;

  std::vector<CommercetoolsRequest> requests() const;
  size_t tokens_issued() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};


// Customer number i: id "00000000-0000-0000-0000-<i, 12 digits>", email "c<i>@x.se".
boost::json::object sample_customer(int i);

}  // namespace weft::fakes
