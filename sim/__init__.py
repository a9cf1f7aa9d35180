"""cocotb testbenches for the emitted Verilog (installed as the package ``hwgen.testbenches``).

``tb_top`` drives ``hwgen_top`` (run by :func:`hwgen.sim.runner.simulate`), ``tb_spi`` drives
``hwgen_spi_top`` with the reference SPI host driver (run by :func:`hwgen.sim.spi_runner.simulate_spi`).
See README.md.
"""
