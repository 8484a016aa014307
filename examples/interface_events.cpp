// interface_events: the NetBSD patch's subject — one network interface event fans out
// to subscribers that each run their own continuation, the kqueue among them.
//
//   driver (softserial)
//      |  em0.post(link_up)            one activation of em0's klist
//      v
//   em0.klist ---- ifnet_filter decides per knote from the hint ----
//      +--> dhcp client   immediate: runs inside the post; detaches
//      |                  itself when the link goes down
//      +--> routing       softnet: deferred, runs when softnet drains;
//      |                  several posts before that coalesce into one run
//      +--> kqueue knote  the kqueue's continuation queues it once;
//                         the monitor thread's blocking scan wakes up
//
// The kqueue is just one continuation among many: the klist and the knotes do
// not know it exists. The main thread waits for the monitor to report each
// event, so the output is deterministic.
#include <kcont/kcont.hpp>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

using kcont::bsd_level;
using kcont::ev;
using kn_t = kcont::knote_base<long>;

// Interface events: the hint of em0's klist, and the bits a knote's sfflags
// select and its fflags report.
enum : long { link_up = 1, link_down = 2, addr_added = 4, addr_removed = 8 };

std::string describe(std::uint32_t bits) {
  std::string s;
  for (auto [bit, name] : {std::pair{link_up, "link-up"}, {link_down, "link-down"},
                           {addr_added, "addr-added"}, {addr_removed, "addr-removed"}})
    if (bits & bit) {
      if (!s.empty()) s += ',';
      s += name;
    }
  return s;
}

struct interface;

// What a kqueue filter finds an interface by: its index (the kevent ident).
struct interface_table {
  interface* slots[4] = {};
};

struct interface {
  int index;
  const char* name;
  bool up = false;
  int addresses = 0;
  kcont::klist<long, bsd_level, std::mutex> klist;

  // The driver reports a change: one fan-out over the klist.
  template <class D>
  void post(D& d, long event) {
    if (event == link_up) up = true;
    if (event == link_down) up = false;
    if (event == addr_added) ++addresses;
    if (event == addr_removed) --addresses;
    std::printf("driver: %s %s\n", name, describe(static_cast<std::uint32_t>(event)).c_str());
    klist.fire(d, event, bsd_level::softserial);
  }
};

// The filter: a knote's sfflags select the events it wants; fflags collect
// the events seen since the last report (reset by an EV_CLEAR report).
struct ifnet_filter {
  static constexpr kcont::filter_id id{1};
  using context_type = interface_table;
  interface_table* table;
  interface* ifp = nullptr;
  explicit ifnet_filter(interface_table& t) : table(&t) {}

  int attach(kn_t& kn) {
    if (kn.ident >= 4 || table->slots[kn.ident] == nullptr) return ENXIO;
    ifp = table->slots[kn.ident];
    ifp->klist.insert(kn);
    return 0;
  }
  void detach(kn_t& kn) { (void)ifp->klist.erase(kn); }
  bool event(kn_t& kn, long hint) {
    if (hint == 0) return kn.fflags != 0;  // the kqueue's re-check
    const auto bits = static_cast<std::uint32_t>(hint) & kn.sfflags;
    kn.fflags |= bits;
    return bits != 0;
  }
};

// (a) Routing: a member-function knote whose continuation runs at softnet.
struct routing {
  void on_ifevent(kn_t*, kcont::knote_cause) {
    std::printf("softnet: routing: %s %s, %d address(es): routes recomputed\n", ifp->name,
                ifp->up ? "up" : "down", ifp->addresses);
  }

  interface* ifp;
  kcont::knote_method<&routing::on_ifevent, ifnet_filter,
                      kcont::static_level<bsd_level::softnet>>
      sub;
  routing(interface_table& t, interface* i)
      : ifp(i), sub{ifnet_filter{t}, this, kcont::at<bsd_level::softnet>,
                    static_cast<std::uintptr_t>(i->index)} {
    sub.sfflags = link_up | link_down | addr_added | addr_removed;
  }
};

// (c) A DHCP client that only cares about the link, and leaves on link down.
struct dhcp_client {
  void on_link(kn_t* kn, kcont::knote_cause) {
    if (ifp->up) {
      std::printf("immediate: dhcp: %s is up, requesting a lease\n", ifp->name);
      return;
    }
    std::printf("immediate: dhcp: %s is down, unsubscribing\n", ifp->name);
    kn->detach();  // from inside the fan-out: the fan-out skips past it
  }

  interface* ifp;
  kcont::knote_method<&dhcp_client::on_link, ifnet_filter,
                      kcont::static_level<bsd_level::immediate>>
      sub;
  dhcp_client(interface_table& t, interface* i)
      : ifp(i), sub{ifnet_filter{t}, this, kcont::at<bsd_level::immediate>,
                    static_cast<std::uintptr_t>(i->index)} {
    sub.sfflags = link_up | link_down;
  }
};

using kqueue_t = kcont::kqueue<kcont::filters<ifnet_filter, kcont::user_filter>, const char*>;

int main() {
  kcont::manual_dispatcher<> d;
  interface_table table;
  interface em0{1, "em0", false, 0, {}};
  table.slots[1] = &em0;

  dhcp_client dhcp{table, &em0};
  routing route{table, &em0};
  (void)dhcp.sub.attach();
  (void)route.sub.attach();

  // (b) The monitor: a thread that scans a kqueue. Its knote is registered
  // last, so it is the last subscriber on em0's klist.
  kqueue_t kq{table};
  const kqueue_t::kevent_type changes[] = {
      {.ident = 1, .filter = ifnet_filter::id, .flags = ev::add | ev::clear,
       .fflags = link_up | link_down | addr_added | addr_removed, .udata = "em0 watch"},
      {.ident = 0, .filter = kcont::filter_id::user, .flags = ev::add, .udata = "shutdown"},
  };
  (void)kq.kevent(changes, {});

  // The monitor tells the main thread it has printed a report. (A
  // std::binary_semaphore says the same; MinGW's libstdc++ 12, which the
  // Windows check builds with, loses its wake-ups, so: a condition variable.)
  std::mutex report_lock;
  std::condition_variable report_cv;
  int reports = 0;
  std::thread monitor([&] {
    kqueue_t::kevent_type events[4];
    for (;;) {
      const auto r = kq.kevent({}, events, std::nullopt);  // block until an event
      for (int i = 0; i < r.ret; ++i) {  // r.ret: what C's kevent() returns
        const auto& e = events[i];
        if (e.filter == kcont::filter_id::user) {
          std::printf("monitor: %s, exiting\n", e.udata);
          return;
        }
        std::printf("monitor: %s: %s\n", e.udata, describe(e.fflags).c_str());
      }
      {
        const std::lock_guard<std::mutex> g(report_lock);
        ++reports;
      }
      report_cv.notify_one();
    }
  });

  auto step = [&, seen = 0](long event) mutable {
    em0.post(d, event);
    std::unique_lock<std::mutex> g(report_lock);
    report_cv.wait(g, [&] { return reports > seen; });  // the monitor has printed its report
    seen = reports;
  };

  step(link_up);
  d.drain(bsd_level::softnet);
  step(addr_added);
  step(addr_added);
  std::printf("softnet pending: %d (two posts, one deferred run)\n",
              d.has_work(bsd_level::softnet));
  d.drain(bsd_level::softnet);
  step(addr_removed);
  d.drain(bsd_level::softnet);
  step(link_down);
  d.drain(bsd_level::softnet);
  step(link_up);  // dhcp has left: it hears nothing now
  d.drain(bsd_level::softnet);

  // Every change but a delete sets the knote's udata (as on a BSD): the
  // trigger carries the cookie the monitor prints.
  (void)kq.change({.ident = 0, .filter = kcont::filter_id::user, .fflags = kcont::note::trigger,
                   .udata = "shutdown"});
  monitor.join();
  route.sub.detach(d);
  std::printf("em0 subscribers left: %zu (the monitor's kqueue knote)\n", em0.klist.size_slow());
}
// Expected output:
//   driver: em0 link-up
//   immediate: dhcp: em0 is up, requesting a lease
//   monitor: em0 watch: link-up
//   softnet: routing: em0 up, 0 address(es): routes recomputed
//   driver: em0 addr-added
//   monitor: em0 watch: addr-added
//   driver: em0 addr-added
//   monitor: em0 watch: addr-added
//   softnet pending: 1 (two posts, one deferred run)
//   softnet: routing: em0 up, 2 address(es): routes recomputed
//   driver: em0 addr-removed
//   monitor: em0 watch: addr-removed
//   softnet: routing: em0 up, 1 address(es): routes recomputed
//   driver: em0 link-down
//   immediate: dhcp: em0 is down, unsubscribing
//   monitor: em0 watch: link-down
//   softnet: routing: em0 down, 1 address(es): routes recomputed
//   driver: em0 link-up
//   monitor: em0 watch: link-up
//   softnet: routing: em0 up, 1 address(es): routes recomputed
//   monitor: shutdown, exiting
//   em0 subscribers left: 1 (the monitor's kqueue knote)
