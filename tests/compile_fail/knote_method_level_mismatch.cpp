// A knote_method member whose type says softnet, initialised with
// at<immediate>. Once "could not convert '{...}' from '<brace-enclosed
// initializer list>'".
// expect-first: kcont::knote_method: the level argument differs from the level in the type
#include <kcont/knote_closure.hpp>

struct link_filter {
  int attach(kcont::knote_base<long>&) { return 0; }
  void detach(kcont::knote_base<long>&) {}
  bool event(kcont::knote_base<long>&, long) { return true; }
};

struct router {
  void on_link(kcont::knote_base<long>*, kcont::knote_cause) {}
  kcont::knote_method<&router::on_link, link_filter,
                      kcont::static_level<kcont::bsd_level::softnet>>
      sub{link_filter{}, this, kcont::at<kcont::bsd_level::immediate>};
};

int main() {
  router r;
  (void)r;
}
