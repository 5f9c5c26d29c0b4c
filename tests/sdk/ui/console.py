"""Drives Tally's web console in headless Chromium (Selenium, the system's
chromium and chromedriver): a wrong token refused, sign-in, the overview's
live numbers, a search, a license page, releasing a floating seat with its
confirmation, a tenant page. Saves screenshots of each page.

    python console.py BASE_URL ADMIN_TOKEN SCREENSHOT_DIR
"""
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

base, token, shots = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("TALLY_CHROMIUM", "/usr/bin/chromium")
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
    options.add_argument(arg)
service = Service(executable_path=os.environ.get("TALLY_CHROMEDRIVER", "/usr/bin/chromedriver"))
driver = webdriver.Chrome(service=service, options=options)
wait = WebDriverWait(driver, 15)


def shot(name):
    driver.save_screenshot(os.path.join(shots, "console-" + name + ".png"))


def sign_in(t):
    field = wait.until(ec.visibility_of_element_located((By.ID, "token")))
    field.clear()
    field.send_keys(t)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()


try:
    driver.get(base + "/ui/")
    # A wrong token: refused, still on the sign-in form.
    sign_in("not-the-token")
    wait.until(ec.text_to_be_present_in_element((By.ID, "signin-error"), "refused"))
    assert "token" not in driver.current_url, driver.current_url
    shot("signin")
    # The right one: the overview, with the engine's totals and live requests.
    sign_in(token)
    wait.until(ec.text_to_be_present_in_element((By.ID, "tile-licenses"), "6"))
    seats = driver.find_element(By.CSS_SELECTOR, "#tile-seats .n").text
    assert seats == "1", seats
    wait.until(ec.text_to_be_present_in_element((By.ID, "view"), "requests/s"))
    # The second reading gives rates.
    wait.until(lambda d: "…" not in d.find_element(By.TAG_NAME, "table").text)
    assert token not in driver.current_url
    shot("overview")
    # Search for the license, open it.
    box = driver.find_element(By.ID, "q")
    box.send_keys("DEMO-STUDIO-0001")
    driver.find_element(By.CSS_SELECTOR, "#search button").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "a.hit"))).click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), "License DEMO-STUDIO-0001"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "view"), "browser-seat"))
    assert "1 / 2 seats" in driver.find_element(By.ID, "view").text
    shot("license")
    # Release the held seat, confirm, and see the count change.
    driver.find_element(By.CSS_SELECTOR, "button.release").click()
    wait.until(ec.visibility_of_element_located((By.ID, "confirm-ok"))).click()
    wait.until(ec.visibility_of_element_located((By.ID, "no-holders")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "view"), "0 / 2 seats"))
    # The tenant: licenses, keys, vendor sections, the ledger.
    driver.find_element(By.CSS_SELECTOR, "#view table a").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), "Tenant"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "view"), "Qlik license"))
    shot("tenant")
    tenant_url = driver.current_url
    # A product's licenses, and a webhook's attempts.
    driver.find_element(By.CSS_SELECTOR, "a[href*='/products/']").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), "Product"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "view"), "DEMO-STUDIO-0001"))
    driver.get(tenant_url)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "a[href^='#/webhooks/']"))).click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#view h1"), "Webhook"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "view"), "Attempts"))
    print("sdk: all calls passed")
finally:
    driver.quit()
