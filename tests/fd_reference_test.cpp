// The EVFILT_READ / EVFILT_WRITE reference model (fd_reference.hpp) on
// hand-worked FreeBSD cases: what kqueue(2) documents and what kern_event.c,
// sys_pipe.c and uipc_socket.c do, each case citing its source. The model
// runs no descriptor: the idents are labels.
#include "fd_reference.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

namespace {

using namespace kqref;

constexpr int r = 3, w = 4, a = 5, b = 6;
constexpr std::int64_t pipe_size = 65536;

fd_model fresh() {
  fd_model m;
  m.add_pipe(r, w, pipe_size);
  m.add_socketpair(a, b);
  return m;
}

// The one event a scan reports (the test case fails unless it is one).
kev scan_one(fd_model& m) {
  const std::vector<kev> out = m.scan(8);
  REQUIRE(out.size() == 1);
  return out[0];
}

kev ch(int fd, std::int16_t filter, std::uint16_t flags, std::uintptr_t udata = 0) {
  return kev{static_cast<std::uintptr_t>(fd), filter, flags, 0, 0, udata};
}

}  // namespace

TEST_CASE("fd_reference.read_level_triggered_reports_bytes_queued_until_drained") {
  // kqueue.2 EVFILT_READ: "data contains the number of bytes available";
  // without EV_CLEAR kqueue_scan re-queues the knote while filt_piperead
  // holds.
  fd_model m = fresh();
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ADD, 7)) == 0);
  CHECK(m.scan(8).empty());
  m.write(w, 10);
  kev e = scan_one(m);
  CHECK(e == kev{r, EVFILT_READ, 0, 0, 10, 7});
  CHECK(m.scan(8).size() == 1);  // still there
  CHECK(m.read(r, 4) == 4);
  e = scan_one(m);
  CHECK(e.data == 6);  // re-checked by the scan
  CHECK(m.read(r, 100) == 6);
  CHECK(m.scan(8).empty());  // kqueue_scan: f_event 0 drops it silently
  CHECK(m.queued() == 0);
}

TEST_CASE("fd_reference.clear_reports_again_only_after_a_new_knote_call") {
  fd_model m = fresh();
  REQUIRE(m.change(ch(b, EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  m.write(a, 5);
  kev e = scan_one(m);
  CHECK(e.data == 5);
  CHECK(e.flags == EV_CLEAR);
  CHECK(m.scan(8).empty());  // reset: nothing new
  // A partial read of a socket knotes only the peer's send buffer
  // (uipc_rcvd): the reader's EV_CLEAR knote stays quiet.
  CHECK(m.read(b, 2) == 2);
  CHECK(m.scan(8).empty());
  // The next write (uipc_send: sorwakeup_locked) fires it with the total.
  m.write(a, 4);
  e = scan_one(m);
  CHECK(e.data == 7);
}

TEST_CASE("fd_reference.pipe_partial_read_fires_the_readers_clear_knote_again") {
  // pipe_read: "if (nread > 0 && size - cnt >= PIPE_BUF) pipeselwakeup(rpipe)"
  // wakes the read side's klist, where the read knote hangs: filt_piperead
  // finds bytes left and activates it again.
  fd_model m = fresh();
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  m.write(w, 10);
  REQUIRE(m.scan(8).size() == 1);
  CHECK(m.read(r, 3) == 3);
  kev e = scan_one(m);
  CHECK(e.data == 7);
  CHECK(m.read(r, 7) == 7);
  CHECK(m.scan(8).empty());  // nothing left: filt_piperead returns 0
}

TEST_CASE("fd_reference.pipe_write_reports_the_space_left") {
  // kqueue.2 EVFILT_WRITE: "data will contain the amount of space remaining
  // in the write buffer"; filt_pipewrite: size - cnt.
  fd_model m = fresh();
  REQUIRE(m.change(ch(w, EVFILT_WRITE, EV_ADD)) == 0);
  kev e = scan_one(m);
  CHECK(e.data == pipe_size);
  m.write(w, 100);
  e = scan_one(m);
  CHECK(e.data == pipe_size - 100);
}

TEST_CASE("fd_reference.socket_write_is_ready_with_some_space") {
  fd_model m = fresh();
  REQUIRE(m.change(ch(a, EVFILT_WRITE, EV_ADD)) == 0);
  kev e = scan_one(m);
  CHECK(e.data == any_positive);
  CHECK(e.flags == 0);
}

TEST_CASE("fd_reference.pipe_read_eof_when_the_writer_closes_with_bytes_left") {
  // kqueue.2: "the filter will set EV_EOF when the last writer
  // disconnects"; filt_piperead keeps data = bytes left.
  fd_model m = fresh();
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ADD)) == 0);
  m.write(w, 9);
  m.close(w);
  kev e = scan_one(m);
  CHECK(e.flags == EV_EOF);
  CHECK(e.data == 9);
  CHECK(m.read(r, 9) == 9);
  e = scan_one(m);  // EOF holds with nothing left
  CHECK(e.flags == EV_EOF);
  CHECK(e.data == 0);
}

TEST_CASE("fd_reference.pipe_write_knote_turns_oneshot_eof_when_the_reader_closes") {
  // pipeclose(reader): pipeselwakeup activates the writer's write knote
  // (filt_pipewrite: PIPE_EOF -> EV_EOF), then knlist_clear marks it "EV_EOF
  // | EV_ONESHOT" (knlist_cleardel): reported once, then dropped.
  fd_model m = fresh();
  REQUIRE(m.change(ch(w, EVFILT_WRITE, EV_ADD | EV_CLEAR, 3)) == 0);
  m.write(w, 20);
  REQUIRE(m.scan(8).size() == 1);
  m.close(r);
  kev e = scan_one(m);
  CHECK(e == kev{w, EVFILT_WRITE, EV_CLEAR | EV_EOF | EV_ONESHOT, 0, pipe_size - 20, 3});
  CHECK(!m.has_knote(w, EVFILT_WRITE));
  CHECK(m.change(ch(w, EVFILT_WRITE, EV_DELETE)) == ENOENT);
  // pipe_kqfilter: "if (cpipe->pipe_peer->pipe_present != PIPE_ACTIVE)
  // ... return (EPIPE);"
  CHECK(m.change(ch(w, EVFILT_WRITE, EV_ADD)) == EPIPE);
  CHECK(m.registered() == 0);
}

TEST_CASE("fd_reference.socket_shutdown_write_gives_eof_on_both_sides") {
  // uipc_shutdown: socantsendmore(so) -> filt_sowrite EV_EOF; unp_shutdown:
  // socantrcvmore(so2) -> filt_soread EV_EOF with the bytes still queued.
  fd_model m = fresh();
  REQUIRE(m.change(ch(a, EVFILT_WRITE, EV_ADD | EV_CLEAR)) == 0);
  REQUIRE(m.change(ch(b, EVFILT_READ, EV_ADD | EV_CLEAR)) == 0);
  m.write(a, 3);
  CHECK(m.scan(8).size() == 2);
  m.shutdown_write(a);
  auto out = m.scan(8);
  REQUIRE(out.size() == 2);
  for (const kev& e : out) {
    CHECK((e.flags & EV_EOF) != 0);
    CHECK(e.fflags == 0);
    if (e.filter == EVFILT_READ) CHECK(e.data == 3);
  }
  CHECK(!m.can_write(a));
  CHECK(m.can_write(b));  // the other direction still works
}

TEST_CASE("fd_reference.socket_peer_close_gives_read_and_write_eof") {
  // unp_disconnect -> soisdisconnected(so2): socantrcvmore + socantsendmore.
  fd_model m = fresh();
  REQUIRE(m.change(ch(b, EVFILT_READ, EV_ADD)) == 0);
  REQUIRE(m.change(ch(b, EVFILT_WRITE, EV_ADD | EV_CLEAR)) == 0);
  CHECK(m.scan(8).size() == 1);  // the write knote, once (EV_CLEAR)
  CHECK(m.scan(8).empty());
  m.close(a);
  auto out = m.scan(8);
  REQUIRE(out.size() == 2);
  for (const kev& e : out) CHECK((e.flags & EV_EOF) != 0);
  out = m.scan(8);  // the level-triggered read knote stays
  REQUIRE(out.size() == 1);
  CHECK(out[0].filter == EVFILT_READ);
}

TEST_CASE("fd_reference.closing_a_descriptor_drops_its_knotes_and_their_events") {
  // knote_fdclose: every knote on the descriptor is dropped, a pending
  // event with it; kqueue_register's fget then fails: EBADF for any change.
  fd_model m = fresh();
  REQUIRE(m.change(ch(a, EVFILT_READ, EV_ADD)) == 0);
  REQUIRE(m.change(ch(a, EVFILT_WRITE, EV_ADD)) == 0);
  m.write(b, 1);
  CHECK(m.queued() == 2);
  m.close(a);
  CHECK(m.registered() == 0);
  CHECK(m.queued() == 0);
  CHECK(m.scan(8).empty());
  CHECK(m.change(ch(a, EVFILT_READ, EV_DELETE)) == EBADF);
  CHECK(m.change(ch(a, EVFILT_READ, EV_ADD)) == EBADF);
}

TEST_CASE("fd_reference.oneshot_reports_its_last_check_then_is_deleted") {
  // kqueue_scan: an EV_ONESHOT knote is copied out as it stands (no f_event)
  // and dropped. pipe_read's pipeselwakeup ran filt_piperead after the
  // drain, which set kn_data to 0 (returning 0 leaves it queued).
  fd_model m = fresh();
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ADD | EV_ONESHOT)) == 0);
  m.write(w, 8);
  CHECK(m.read(r, 8) == 8);
  auto out = m.scan(8);
  REQUIRE(out.size() == 1);
  CHECK(out[0] == kev{r, EVFILT_READ, EV_ONESHOT, 0, 0, 0});
  CHECK(m.registered() == 0);
}

TEST_CASE("fd_reference.dispatch_disables_after_report_and_enable_rechecks") {
  // kqueue_scan: EV_DISPATCH sets KN_DISABLED after the report;
  // kqueue_register with EV_ENABLE calls f_event and queues it if it holds.
  fd_model m = fresh();
  REQUIRE(m.change(ch(b, EVFILT_READ, EV_ADD | EV_DISPATCH)) == 0);
  m.write(a, 2);
  REQUIRE(m.scan(8).size() == 1);
  m.write(a, 2);
  CHECK(m.scan(8).empty());  // disabled
  REQUIRE(m.change(ch(b, EVFILT_READ, EV_ENABLE)) == 0);
  kev e = scan_one(m);
  CHECK(e.data == 4);
  CHECK(e.flags == EV_DISPATCH);
}

TEST_CASE("fd_reference.disabled_knote_reports_nothing_until_enabled") {
  fd_model m = fresh();
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ADD | EV_DISABLE)) == 0);
  m.write(w, 5);
  CHECK(m.scan(8).empty());
  // A re-EV_ADD does not re-enable (kqueue_register).
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ADD)) == 0);
  CHECK(m.scan(8).empty());
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ENABLE, 9)) == 0);
  kev e = scan_one(m);
  CHECK(e == kev{r, EVFILT_READ, 0, 0, 5, 9});  // udata of the latest change
  // Disabling a queued knote: the scan drops it unreported.
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_DISABLE)) == 0);
  CHECK(m.scan(8).empty());
  CHECK(m.queued() == 0);
}

TEST_CASE("fd_reference.changes_on_missing_knotes") {
  fd_model m = fresh();
  CHECK(m.change(ch(r, EVFILT_READ, EV_DELETE)) == ENOENT);
  CHECK(m.change(ch(r, EVFILT_READ, EV_ENABLE)) == ENOENT);
  CHECK(m.change(ch(r, EVFILT_READ, EV_ENABLE | EV_DISABLE)) == EINVAL);
  CHECK(m.change(ch(99, EVFILT_READ, EV_ADD)) == EBADF);  // not open
  REQUIRE(m.change(ch(r, EVFILT_READ, EV_ADD)) == 0);
  CHECK(m.change(ch(r, EVFILT_READ, EV_DELETE)) == 0);
  CHECK(m.change(ch(r, EVFILT_READ, EV_DELETE)) == ENOENT);
}

TEST_CASE("fd_reference.delete_drops_a_pending_event") {
  fd_model m = fresh();
  REQUIRE(m.change(ch(a, EVFILT_WRITE, EV_ADD)) == 0);
  CHECK(m.queued() == 1);
  REQUIRE(m.change(ch(a, EVFILT_WRITE, EV_DELETE)) == 0);
  CHECK(m.queued() == 0);
  CHECK(m.scan(8).empty());
}
