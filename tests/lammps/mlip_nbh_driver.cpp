// What LAMMPS `pair_style mlip` does in its neighbourhood mode (interface-lammps-mlip-2,
// PairMLIP::init_style + compute), without LAMMPS: MLIP_init(mlip.ini) then MLIP_calc_nbh over
// a full neighbour list of local atoms, positions and 1-based types of local + ghost atoms.
// Build: g++ -O2 mlip_nbh_driver.cpp lib_mlip_interface.a -lgfortran -o driver
// Input (stdin): nlocal nghost ntypes / nall lines "type x y z" / nlocal lines "count j1 j2 ...".
// Output: "energy E" then nall lines "fx fy fz" (%.17g).
#include <cstdio>
#include <vector>

extern void MLIP_init(const char*, const char*, int, double&, int&);
extern void MLIP_calc_nbh(int, int*, int*, int**, int, int, double**, int*, double**, double&,
                          double*, double**);
extern void MLIP_finalize();

int main(int argc, char** argv) {
  if (argc != 2) { std::fprintf(stderr, "usage: driver mlip.ini < input\n"); return 2; }
  int nlocal, nghost, ntypes;
  if (std::scanf("%d %d %d", &nlocal, &nghost, &ntypes) != 3) return 3;
  const int nall = nlocal + nghost;
  std::vector<int> type(nall);
  std::vector<double> xbuf(3 * nall), fbuf(3 * nall, 0.0);
  std::vector<double*> x(nall), f(nall);
  for (int i = 0; i < nall; ++i) {
    if (std::scanf("%d %lf %lf %lf", &type[i], &xbuf[3 * i], &xbuf[3 * i + 1],
                   &xbuf[3 * i + 2]) != 4) return 3;
    x[i] = &xbuf[3 * i];
    f[i] = &fbuf[3 * i];
  }
  std::vector<int> ilist(nlocal), numneigh(nall, 0);
  std::vector<std::vector<int>> rows(nall);
  std::vector<int*> firstneigh(nall, nullptr);
  for (int i = 0; i < nlocal; ++i) {
    ilist[i] = i;
    if (std::scanf("%d", &numneigh[i]) != 1) return 3;
    rows[i].resize(numneigh[i] + 1);
    for (int k = 0; k < numneigh[i]; ++k)
      if (std::scanf("%d", &rows[i][k]) != 1) return 3;
    firstneigh[i] = rows[i].data();
  }
  double cutoff = 0.0;
  int mode = -1;
  MLIP_init(argv[1], nullptr, ntypes, cutoff, mode);
  if (mode != 0) { std::fprintf(stderr, "MLIP is not in neighbourhood mode (%d)\n", mode); return 4; }
  double energy = 0.0;
  MLIP_calc_nbh(nlocal, ilist.data(), numneigh.data(), firstneigh.data(), nlocal, nghost,
                x.data(), type.data(), f.data(), energy, nullptr, nullptr);
  std::printf("cutoff %.17g\nenergy %.17g\n", cutoff, energy);
  for (int i = 0; i < nall; ++i) std::printf("%.17g %.17g %.17g\n", f[i][0], f[i][1], f[i][2]);
  MLIP_finalize();
  return 0;
}
