// A knote whose continuation takes something else than the knote as obj.
// expect: kcont::knote: the continuation must take the knote
#include <kcont/knote.hpp>

struct any_event {
  int attach(kcont::knote_base<long>&) { return 0; }
  void detach(kcont::knote_base<long>&) {}
  bool event(kcont::knote_base<long>&, long) { return true; }
};

int main() {
  kcont::kc k{[](int*, int&, kcont::knote_cause) {}, 0, kcont::bsd_level::immediate};
  kcont::knote<any_event> kn{any_event{}, k};
  (void)kn;
}
