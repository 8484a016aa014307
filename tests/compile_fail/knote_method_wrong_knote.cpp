// A member handler that takes another knote type than its knote_method's:
// its first parameter must be knote_base<Hint, Level>* with the filter's Hint
// (long here, not int). Once reported as a bad Env parameter of kc.
// expect-first: kcont::knote_method: the member function does not take this knote
#include <kcont/knote_closure.hpp>

struct link_filter {
  int attach(kcont::knote_base<long>&) { return 0; }
  void detach(kcont::knote_base<long>&) {}
  bool event(kcont::knote_base<long>&, long) { return true; }
};

struct router {
  void on_link(kcont::knote_base<int>*, kcont::knote_cause) {}
  kcont::knote_method<&router::on_link, link_filter,
                      kcont::static_level<kcont::bsd_level::softnet>>
      sub{link_filter{}, this, kcont::at<kcont::bsd_level::softnet>};
};

int main() {
  router r;
  (void)r;
}
