// A filter without `event`: the knote names the missing member.
// expect: the filter has no `bool event(knote_base<Hint, Level>&, Hint)`
#include <kcont/knote.hpp>

struct no_event {
  int attach(kcont::knote_base<long>&) { return 0; }
  void detach(kcont::knote_base<long>&) {}
};

int main() {
  kcont::kc k{[](kcont::knote_base<long>*, int&, kcont::knote_cause) {}, 0,
              kcont::bsd_level::immediate};
  kcont::knote<no_event> kn{no_event{}, k};
  (void)kn;
}
